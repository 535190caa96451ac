"""Helpers for the shadow, experiment and rollback tests: bars that arrive in stages, and versions
of a model line (type "other") whose artifacts are a small rule-based trainer with a known skill.

`RuleTrainer` peeks at the next bar on a share `skill` of bars (a deliberately good model: its
edge is known, so a test can say which model is better) and otherwise takes a pseudo-random side
that depends on the bar's timestamp and its seed only, so its positions on old bars never change
as new bars arrive. `skill` below zero trades against the next move: a losing model.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from registry import services
from registry.artifacts import artifact_save
from registry.models import ModelStatus, ModelVersion, RegisteredModel
from tests.conftest import evaluation_add
from training import trainers
from training.data.bars import bars_frame, bars_import
from training.data.dataset import Bars, Dataset
from training.data.features import validate_feature_spec
from training.data.synthetic import generate_bars
from training.trainers.base import Trainer

SYMBOL = "LIFE"
MODEL_ID = "other-life-1h"
SPEC = validate_feature_spec(
    {
        "return_lags": [1, 2], "volatility_windows": [], "ma_windows": [], "rsi_period": None,
        "volume_zscore_window": None,
    }
)  # fmt: skip


class RuleTrainer(Trainer):
    model_type = "other"
    default_params = {"skill": 0.0, "seed": 0, "flat": False}

    def fit(self, data: Dataset, train: slice, validation: slice | None = None) -> dict[str, float]:
        return {}

    def _positions(self, data: Dataset, window: slice) -> np.ndarray:
        close = data.bars.close
        rows = np.arange(window.start, window.stop)
        if self.params["flat"]:
            return np.zeros(len(rows))
        seconds = data.bars.timestamp[rows].astype("int64").astype(np.float64)
        noise = np.sin(seconds * 12.9898e-3 + self.params["seed"] * 78.233) * 43_758.5453
        uniform = noise - np.floor(noise)
        side = np.where(uniform < 0.5, -1.0, 1.0)
        ahead = np.minimum(rows + 1, len(close) - 1)
        move = np.sign(close[ahead] - close[rows])
        peek = (uniform * 7.0) % 1.0 < abs(self.params["skill"])
        return np.where(peek, np.sign(self.params["skill"]) * move, side)

    def dumps(self) -> bytes:
        return json.dumps(self.params, sort_keys=True).encode()

    @classmethod
    def loads(cls, blob: bytes) -> RuleTrainer:
        return cls(json.loads(blob))


@pytest.fixture
def rule_trainers(monkeypatch):
    """Model type "other" trades with RuleTrainer."""
    monkeypatch.setitem(trainers._REGISTRY, "other", f"{__name__}:RuleTrainer")


def market(n_bars: int, *, seed: int = 5) -> Bars:
    bars, _ = generate_bars(n_bars, seed=seed)
    return bars


def arrive(bars: Bars, count: int, *, symbol: str = SYMBOL) -> datetime:
    """Store the first `count` bars (the ones before stay as they were); the last one's time."""
    bars_import(frame=bars_frame(bars.slice(slice(0, count))), symbol=symbol, timeframe="1h")
    return stamp(bars, count - 1)


def stamp(bars: Bars, index: int) -> datetime:
    return datetime.fromtimestamp(int(bars.timestamp[index].astype("int64")), tz=UTC)


def rule_version(
    *,
    skill: float = 0.0,
    seed: int = 0,
    flat: bool = False,
    status: str = ModelStatus.CANDIDATE,
    train_end: datetime | None = None,
    passed: bool = True,
) -> ModelVersion:
    """A version of other-life-1h with a RuleTrainer artifact, moved to `status`."""
    model = services.registered_model_get_or_create(
        model_type="other", symbol=SYMBOL, timeframe="1h"
    )
    blob = RuleTrainer({"skill": skill, "seed": seed, "flat": flat}).dumps()
    stored = artifact_save(model_id=model.model_id, blob=blob)
    version = services.model_version_register(
        model=model, params={"skill": skill, "seed": seed}, feature_spec=SPEC,
        training_metrics={}, manifest={}, artifact_path=stored.path,
        artifact_sha256=stored.sha256, artifact_size=stored.size, train_end=train_end,
    )  # fmt: skip
    evaluation_add(version=version, passed=passed)
    steps = {
        ModelStatus.CANDIDATE: [ModelStatus.CANDIDATE],
        ModelStatus.SHADOW: [ModelStatus.SHADOW],
        ModelStatus.PRODUCTION: [ModelStatus.CANDIDATE],
        ModelStatus.FAILED: [ModelStatus.FAILED],
    }[status]
    for step in steps:
        services.model_version_set_status(
            model_id=model.model_id, version=version.version, status=step, actor="test"
        )
    if status == ModelStatus.PRODUCTION:
        services.model_version_promote(
            model_id=model.model_id, version=version.version, actor="test"
        )
    version.refresh_from_db()
    return version


def life_model() -> RegisteredModel:
    return RegisteredModel.objects.get(model_id=MODEL_ID)


def status_of(version: ModelVersion) -> str:
    return ModelVersion.objects.get(pk=version.pk).status
