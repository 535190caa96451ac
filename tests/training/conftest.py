"""Market-data fixtures for pipeline tests: generated bars stored in PostgreSQL."""

from __future__ import annotations

import pytest

from registry.models import ModelVersion
from registry.services import JobRequest, training_job_create
from tests.training.serving_fixtures import fitted, market, stored  # noqa: F401
from training.data.bars import bars_frame, bars_import
from training.data.synthetic import generate_bars
from training.pipeline import run_job
from training.promotion.models import PromotionPolicy


def store_bars(symbol: str, n_bars: int, *, seed: int, timeframe: str = "1h", **kwargs) -> None:
    bars, _ = generate_bars(n_bars, seed=seed, timeframe=timeframe, **kwargs)
    bars_import(frame=bars_frame(bars), symbol=symbol, timeframe=timeframe)


def train_versions(*depths: int, symbol: str = "BTCUSDT") -> list[ModelVersion]:
    """One xgboost version per depth, trained and evaluated by the real pipeline, left
    candidates (gates lowered, auto-promotion off)."""
    PromotionPolicy.objects.get_or_create(
        model_type="xgboost",
        defaults={"min_sharpe": -100, "min_win_rate": 0, "min_profit_factor": 0,
                  "max_drawdown": 1.0, "min_trades": 0, "auto_promote": False},
    )  # fmt: skip
    versions = []
    for depth in depths:
        job, _ = training_job_create(
            request=JobRequest(
                model_type="xgboost", symbol=symbol, timeframe="1h",
                params={"n_estimators": 30, "max_depth": depth},
            ),
            dispatch=False,
        )  # fmt: skip
        assert run_job(job_id=str(job.pk)) == "completed"
        job.refresh_from_db()
        versions.append(job.version)
    return versions


@pytest.fixture
def btc_bars(db) -> str:
    """6,000 1h bars of a synthetic BTCUSDT."""
    store_bars("BTCUSDT", 6_000, seed=11)
    return "BTCUSDT"
