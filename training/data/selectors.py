"""Reads of market data used by other apps (the API's training-request validation)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import Count, Max, Min

from training.models import Bar


def bars_required() -> bool:
    """With the default loader a job can only train on bars in this database; another loader
    (settings.CLM_DATA_LOADER) answers for its own data."""
    return settings.CLM_DATA_LOADER == "training.data.fetch_training_data"


def bars_exist(*, symbol: str, timeframe: str) -> bool:
    return Bar.objects.filter(symbol=symbol.upper(), timeframe=timeframe).exists()


def data_available(*, symbol: str, timeframe: str) -> bool:
    """settings.CLM_DATA_AVAILABLE: may a job train on this market? Only bars in this database
    count with the default loader; another loader answers for its own data at run time."""
    return not bars_required() or bars_exist(symbol=symbol, timeframe=timeframe)


@dataclass(frozen=True)
class Market:
    """A symbol and timeframe with stored bars: how many, from when to when."""

    symbol: str
    timeframe: str
    bars: int
    first: datetime
    last: datetime


def markets_list() -> list[Market]:
    rows = (
        Bar.objects.values("symbol", "timeframe")
        .annotate(bars=Count("id"), first=Min("timestamp"), last=Max("timestamp"))
        .order_by("symbol", "timeframe")
    )
    return [Market(**row) for row in rows]
