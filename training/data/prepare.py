"""From bars to what a trainer fits: the dataset and its walk-forward split (pure, no ORM).

The pipeline and the evolution's fitness evaluation build models the same way through this module.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from training.data.dataset import Bars, Dataset
from training.data.features import build_dataset
from training.data.split import DEFAULT_VALIDATION_FRACTION, Split, walk_forward

# The fewest bars a training job or an evolution run accepts in its window.
MIN_BARS = 500


def prepare_training(
    bars: Bars,
    job_params: dict[str, Any],
    *,
    eval_fraction: float,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    test_after: np.datetime64 | None = None,
) -> tuple[Dataset, Split, dict[str, Any], dict[str, Any] | None]:
    """A job's params split into trainer params and feature spec, its dataset and its split.

    Pure (no ORM): the pipeline and the evolution's fitness evaluation build models the same way.
    `test_after` is the last bar a search saw: the test window then starts a purge after it (see
    `walk_forward`'s `test_start_min`). Returns (dataset, split, trainer params, feature spec).
    Raises ValueError on a bad spec or too few bars.
    """
    params = dict(job_params)
    feature_spec = params.pop("features", None)
    horizon = params.pop("horizon", None)
    dataset = build_dataset(bars, feature_spec, horizon=horizon)
    warmup = int(np.argmax(np.isfinite(dataset.features).all(axis=1)))
    test_start_min = None
    if test_after is not None:
        # The first bar after the one the search saw last, then a purge: no label of a row the
        # search read (they end at or before `test_after`) reaches the test window.
        seen = int(np.searchsorted(bars.timestamp, test_after, side="right"))
        test_start_min = seen + dataset.horizon
    split = walk_forward(
        len(dataset),
        horizon=dataset.horizon,
        eval_fraction=eval_fraction,
        validation_fraction=validation_fraction,
        warmup=warmup,
        test_start_min=test_start_min,
    )
    return dataset, split, params, feature_spec


def leaking_features(bars: Bars, dataset: Dataset, spec: dict | None, cut: int) -> list[str]:
    """The features that look ahead: rebuilt from bars[:cut] alone, rows before cut must match.

    A feature that peeks at later bars changes when those bars are cut off.
    """
    prefix = build_dataset(bars.slice(slice(0, cut)), spec, horizon=dataset.horizon)
    full = dataset.features[:cut]
    same = np.isclose(prefix.features, full, rtol=1e-9, atol=1e-12, equal_nan=True)
    return [dataset.feature_names[i] for i in np.flatnonzero(~same.all(axis=0))]
