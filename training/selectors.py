"""Reads of market data used by other apps (the API's training-request validation)."""

from __future__ import annotations

from training.models import Bar


def market_data_exists() -> bool:
    return Bar.objects.exists()


def bars_exist(*, symbol: str, timeframe: str) -> bool:
    return Bar.objects.filter(symbol=symbol.upper(), timeframe=timeframe).exists()
