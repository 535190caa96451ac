"""Fixtures of the serving tests: a stored synthetic market and two fitted xgboost versions of
model `xgboost-srv-1h`, each evaluated honestly on the bars after its training rows."""

from __future__ import annotations

import pytest

from registry import services
from registry.artifacts import artifact_save
from registry.models import ModelStatus, RegisteredModel
from training.data.bars import as_datetime, bars_frame, bars_import
from training.data.dataset import Bars
from training.data.features import build_dataset
from training.data.synthetic import generate_bars
from training.evaluation.backtest import backtest
from training.serving import services as serving
from training.trainers import trainer_class

MODEL = "xgboost-srv-1h"
SYMBOL = "SRV"
N_BARS = 2_000
TRAIN = slice(0, 1_500)
EVALUATE = slice(1_520, N_BARS)
FEE = 0.0005
# Small and always trading (no band, no calibration), so positions are non-zero and seeds differ.
XGB = {"n_estimators": 30, "max_depth": 3, "n_jobs": 1, "no_trade_band": 0.0, "calibration": "none"}


def _fit(seed: int, bars: Bars) -> tuple[bytes, dict]:
    dataset = build_dataset(bars)
    trainer = trainer_class("xgboost")({**XGB, "max_depth": 2 + seed}, seed=seed)
    trainer.fit(dataset, TRAIN)
    return trainer.dumps(), dataset.spec


@pytest.fixture(scope="module")
def market() -> Bars:
    return generate_bars(N_BARS, seed=21)[0]


@pytest.fixture(scope="module")
def fitted(market) -> list[tuple[bytes, dict]]:
    """Two xgboost artifacts (different depth and seed, so their positions differ)."""
    return [_fit(seed, market) for seed in (1, 2)]


def _evaluate(version, blob: bytes, spec: dict, market: Bars) -> None:
    trainer = trainer_class("xgboost").loads(blob)
    positions = trainer.positions(build_dataset(market, spec), EVALUATE)
    result = backtest(market.close[EVALUATE], positions, fee=FEE, periods_per_year=8760)
    metrics = result.as_dict()
    metrics["profit_factor"] = metrics["profit_factor"] or 0.0
    gates = {"sharpe": {"value": result.sharpe, "threshold": -99, "op": ">=", "passed": True}}
    services.evaluation_record(
        version=version, metrics=metrics,
        window_start=as_datetime(market.timestamp[EVALUATE.start]),
        window_end=as_datetime(market.timestamp[EVALUATE.stop - 1]),
        n_bars=EVALUATE.stop - EVALUATE.start, fee=FEE, periods_per_year=8760, n_trials=1,
        gates=gates, passed=True,
    )  # fmt: skip


@pytest.fixture
def stored(db, market, fitted) -> RegisteredModel:
    """The market in the database and two registered versions, v1 in production, v2 candidate."""
    bars_import(frame=bars_frame(market), symbol=SYMBOL, timeframe="1h")
    model = services.registered_model_get_or_create(
        model_type="xgboost", symbol=SYMBOL, timeframe="1h"
    )
    for seed, (blob, spec) in enumerate(fitted, start=1):
        artifact = artifact_save(model_id=model.model_id, blob=blob)
        version = services.model_version_register(
            model=model, params={**XGB, "max_depth": 2 + seed}, feature_spec=spec,
            training_metrics={}, manifest={"seed": seed, "bars": {"count": N_BARS}},
            artifact_path=artifact.path, artifact_sha256=artifact.sha256,
            artifact_size=artifact.size,
        )  # fmt: skip
        _evaluate(version, blob, spec, market)
        services.model_version_set_status(
            model_id=model.model_id, version=version.version, status=ModelStatus.CANDIDATE,
            actor="test",
        )  # fmt: skip
    services.model_version_promote(model_id=model.model_id, version=1, actor="test")
    serving.model_cache.clear()
    serving.position_cache.clear()
    return model
