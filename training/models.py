"""Market data: OHLCV bars, one row per symbol, timeframe and bar open time."""

from __future__ import annotations

from django.db import models

from registry.models import Timeframe


class Bar(models.Model):
    symbol = models.CharField(max_length=32)
    timeframe = models.CharField(max_length=4, choices=Timeframe.choices)
    timestamp = models.DateTimeField()
    open = models.FloatField()
    high = models.FloatField()
    low = models.FloatField()
    close = models.FloatField()
    volume = models.FloatField()

    class Meta:
        ordering = ["symbol", "timeframe", "timestamp"]
        constraints = [
            models.UniqueConstraint(
                fields=["symbol", "timeframe", "timestamp"], name="uniq_bar_symbol_tf_ts"
            ),
            models.CheckConstraint(
                condition=models.Q(low__lte=models.F("high"))
                & models.Q(close__gt=0)
                & models.Q(volume__gte=0),
                name="bar_sane_prices",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.symbol} {self.timeframe} {self.timestamp:%Y-%m-%d %H:%M}"
