"""The fitness of one genome: train it as the pipeline would, backtest it on validation (pure).

The dataset and its walk-forward split come from `training.data.prepare.prepare_training` (as the
pipeline builds them), the model from the trainer registry, the metrics from
`training.evaluation.backtest`. Fitness is the validation window's backtest: the search selects on
it, so the test window (the newest bars, where the selected candidate's training job is evaluated
and gated) is never read here, not even its features.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.data.dataset import Bars
from training.data.features import build_dataset
from training.data.prepare import prepare_training
from training.data.split import DEFAULT_VALIDATION_FRACTION
from training.evaluation.backtest import backtest
from training.trainers import trainer_class

# The key of a candidate's training metrics that holds `Fitness.seen_until` (an ISO time).
SEEN_UNTIL = "seen_until"


@dataclass(frozen=True)
class Fitness:
    """Out-of-sample metrics (METRICS.md names) and the per-bar returns they came from.

    `returns` is s[1..N-1] of the validation window: what a later deflated Sharpe ratio needs.
    `seen_until` is the last bar the evaluation read (the validation window's last): a training
    job for the candidate evaluates it on bars after it.
    """

    metrics: dict[str, Any]
    training_metrics: dict[str, float]
    returns: np.ndarray
    split: dict[str, list[int]]
    seen_until: np.datetime64
    seconds: float


def evaluate_genome(
    bars: Bars,
    *,
    model_type: str,
    params: dict[str, Any],
    seed: int,
    fee: float,
    eval_fraction: float,
    periods_per_year: float,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
) -> Fitness:
    """Fit on the training rows (early-stopped on validation), take positions on the validation
    rows, backtest them.

    Bars after the validation window are cut off before anything is computed: only the split is
    taken from the whole series (so it is the split the training job will use on the same bars).
    Raises ValueError, TypeError or TrainerError for parameters or data the model cannot use.
    """
    started = time.perf_counter()
    whole, split, trainer_params, feature_spec = prepare_training(
        bars, params, eval_fraction=eval_fraction, validation_fraction=validation_fraction
    )
    # Fitted and scored on the bars up to the end of validation only: nothing here can read a
    # test bar. Features are causal, so these rows are the rows the training job will see.
    dataset = build_dataset(
        bars.slice(slice(0, split.validation.stop)), feature_spec, horizon=whole.horizon
    )
    trainer = trainer_class(model_type)(trainer_params, seed=seed)
    training_metrics = trainer.fit(dataset, split.train, split.validation)
    window = split.validation
    result = backtest(
        bars.close[window],
        trainer.positions(dataset, window),
        fee=fee,
        periods_per_year=periods_per_year,
    )
    return Fitness(
        metrics=result.as_dict(),
        training_metrics=training_metrics,
        returns=np.array(result.returns[1:], dtype=np.float64),
        split=split.as_dict(),
        seen_until=bars.timestamp[split.validation.stop - 1],
        seconds=time.perf_counter() - started,
    )


def pack_returns(returns: np.ndarray) -> bytes:
    """Per-bar returns as compressed float64 (flat bars compress to almost nothing)."""
    return zlib.compress(np.ascontiguousarray(returns, dtype="<f8").tobytes(), level=6)


def unpack_returns(blob: bytes | memoryview | None) -> np.ndarray:
    if not blob:
        return np.empty(0)
    return np.frombuffer(zlib.decompress(bytes(blob)), dtype="<f8")
