"""Market-data fixtures for pipeline tests: generated bars stored in PostgreSQL."""

from __future__ import annotations

import pytest

from tests.training.serving_fixtures import fitted, market, stored  # noqa: F401
from training.data.bars import bars_frame, bars_import
from training.data.synthetic import generate_bars


def store_bars(symbol: str, n_bars: int, *, seed: int, timeframe: str = "1h", **kwargs) -> None:
    bars, _ = generate_bars(n_bars, seed=seed, timeframe=timeframe, **kwargs)
    bars_import(frame=bars_frame(bars), symbol=symbol, timeframe=timeframe)


@pytest.fixture
def btc_bars(db) -> str:
    """6,000 1h bars of a synthetic BTCUSDT."""
    store_bars("BTCUSDT", 6_000, seed=11)
    return "BTCUSDT"
