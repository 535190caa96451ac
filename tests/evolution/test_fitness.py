"""The fitness of a genome is measured on the validation window and cannot read a test bar."""

from __future__ import annotations

import numpy as np
import pytest

from evolution.fitness import Fitness, evaluate_genome
from tests.training.test_trainers import FAMILIES, TINY, _perturbed
from training.data.dataset import Bars
from training.data.prepare import prepare_training
from training.data.synthetic import generate_bars
from training.evaluation.backtest import PERIODS_PER_YEAR

N_BARS = 1_500


def _fitness(bars, family: str) -> Fitness:
    return evaluate_genome(
        bars,
        model_type=family,
        params={**TINY[family], "horizon": 4},
        seed=1,
        fee=0.0005,
        eval_fraction=0.25,
        periods_per_year=PERIODS_PER_YEAR["1h"],
    )


def _same(a: Fitness, b: Fitness) -> bool:
    timings = {"fit_seconds"}
    return (
        a.metrics == b.metrics
        and np.array_equal(a.returns, b.returns)
        and a.split == b.split
        and a.seen_until == b.seen_until
        and {k: v for k, v in a.training_metrics.items() if k not in timings}
        == {k: v for k, v in b.training_metrics.items() if k not in timings}
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_fitness_is_blind_to_the_test_window(family) -> None:
    """Bars after the validation window replaced by another path (or by a poison jump) leave the
    fitness, the fitted model's metrics and the split unchanged; the same change 30 bars before
    the end of validation changes the fitness, so this comparison can fail."""
    bars, _ = generate_bars(N_BARS, seed=7)
    _, split, _, _ = prepare_training(bars, {"horizon": 4}, eval_fraction=0.25)
    last_seen = split.validation.stop - 1
    poison = np.ones(len(bars))
    poison[last_seen + 1 :] = 1e6  # a return any reader of these bars could not miss

    fitness = _fitness(bars, family)
    changed = _fitness(_perturbed(bars, last_seen, seed=9), family)
    poisoned = _fitness(
        Bars(
            bars.timestamp,
            bars.open * poison,
            bars.high * poison,
            bars.low * poison,
            bars.close * poison,
            bars.volume * poison,
        ),
        family,
    )
    touched = _fitness(_perturbed(bars, last_seen - 30, seed=9), family)

    assert fitness.split["validation"] == [split.validation.start, split.validation.stop]
    assert fitness.seen_until == bars.timestamp[last_seen]
    assert len(fitness.returns) == split.validation.stop - split.validation.start - 1
    assert _same(fitness, changed)
    assert _same(fitness, poisoned)
    assert not _same(fitness, touched)
