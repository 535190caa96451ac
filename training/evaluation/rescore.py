"""Versions re-run on one window, so their equity curves compare like with like.

Each version's artifact is loaded (its sha256 checked), its features are built with its own spec
over the model's bars up to the window's end, and its positions on the window are backtested with
the window evaluation's fee: how the pipeline scores production on a candidate's window
(training.pipeline.production_sharpe_on), for any versions of one model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np

from registry.artifacts import ArtifactError, artifact_load
from registry.models import EvaluationResult, ModelVersion
from training.data.bars import as_datetime64, get_data_loader
from training.data.features import build_dataset
from training.evaluation.backtest import BacktestResult, backtest
from training.trainers import TrainerError, trainer_class


@dataclass(frozen=True)
class Rescored:
    timestamps: np.ndarray
    buy_hold: BacktestResult | None
    results: dict[int, BacktestResult] = field(default_factory=dict)  # version -> result
    errors: dict[int, str] = field(default_factory=dict)  # version -> why it could not run


def versions_rescore(*, versions: list[ModelVersion], window: EvaluationResult) -> Rescored:
    """Backtest each version on `window` (an evaluation's bars and fee)."""
    model = versions[0].model
    end = window.window_end + timedelta(seconds=1)
    bars = get_data_loader()(model.symbol, model.timeframe, (None, end))
    rows = np.flatnonzero(bars.timestamp >= as_datetime64(window.window_start))
    if len(rows) < 2:
        empty = np.empty(0, dtype="datetime64[s]")
        reason = "the window's bars are no longer stored"
        return Rescored(empty, None, errors={v.version: reason for v in versions})
    span = slice(int(rows[0]), len(bars))
    close = bars.close[span]
    results: dict[int, BacktestResult] = {}
    errors: dict[int, str] = {}
    for version in versions:
        if not version.artifact_path:
            errors[version.version] = "it has no stored artifact"
            continue
        try:
            blob = artifact_load(path=version.artifact_path, sha256=version.artifact_sha256)
            trainer = trainer_class(model.model_type).loads(blob)
            spec = version.feature_spec or None
            dataset = build_dataset(bars, spec, horizon=(spec or {}).get("horizon"))
            positions = trainer.positions(dataset, span)
        except (ArtifactError, TrainerError, ValueError, KeyError) as exc:
            errors[version.version] = str(exc) or type(exc).__name__
            continue
        results[version.version] = backtest(
            close, positions, fee=window.fee, periods_per_year=window.periods_per_year
        )
    buy_hold = backtest(
        close, np.ones(len(close)), fee=0.0, periods_per_year=window.periods_per_year
    )
    return Rescored(bars.timestamp[span], buy_hold, results, errors)
