"""The fitness of one genome: train it as the pipeline would, backtest it out of sample (pure).

The dataset and its walk-forward split come from `training.data.prepare.prepare_training` (as the
pipeline builds them), the model from the trainer registry, the metrics from
`training.evaluation.backtest`: a candidate's score is the score its training job would report on
the same bars, before any version is registered.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.data.dataset import Bars
from training.data.prepare import prepare_training
from training.evaluation.backtest import backtest
from training.trainers import trainer_class


@dataclass(frozen=True)
class Fitness:
    """Out-of-sample metrics (METRICS.md names) and the per-bar returns they came from.

    `returns` is s[1..N-1] of the evaluation window: what a later deflated Sharpe ratio needs.
    """

    metrics: dict[str, Any]
    training_metrics: dict[str, float]
    returns: np.ndarray
    split: dict[str, list[int]]
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
) -> Fitness:
    """Fit on the training rows, take positions on the evaluation rows, backtest them.

    Raises ValueError, TypeError or TrainerError for parameters or data the model cannot use.
    """
    started = time.perf_counter()
    dataset, split, trainer_params, _ = prepare_training(bars, params, eval_fraction=eval_fraction)
    trainer = trainer_class(model_type)(trainer_params, seed=seed)
    training_metrics = trainer.fit(dataset, split.train)
    window = split.evaluate
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
        seconds=time.perf_counter() - started,
    )


def pack_returns(returns: np.ndarray) -> bytes:
    """Per-bar returns as compressed float64 (flat bars compress to almost nothing)."""
    return zlib.compress(np.ascontiguousarray(returns, dtype="<f8").tobytes(), level=6)


def unpack_returns(blob: bytes | memoryview | None) -> np.ndarray:
    if not blob:
        return np.empty(0)
    return np.frombuffer(zlib.decompress(bytes(blob)), dtype="<f8")
