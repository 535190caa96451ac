"""From bars to what a trainer fits: the dataset and its walk-forward split (pure, no ORM).

The pipeline and the evolution's fitness evaluation build models the same way through this module.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

import numpy as np

from training.data.dataset import Bars, Dataset
from training.data.features import build_dataset, validate_feature_spec
from training.data.split import DEFAULT_VALIDATION_FRACTION, Split, walk_forward

# The fewest bars a training job or an evolution run accepts in its window.
MIN_BARS = 500

# Datasets and causality verdicts a worker keeps between jobs, by everything that makes them: the
# function that builds features, the bars' sha256 and the resolved spec (and, for a verdict, the
# cut). Jobs on the same bars (a search's candidates, retraining before new bars arrive, the
# production version scored on a job's windows) build the same features: once is enough.
_DATASETS: OrderedDict[tuple[Any, ...], Dataset] = OrderedDict()
_DATASETS_KEPT, _DATASETS_KEPT_BYTES = 4, 256 * 1024 * 1024
_VERDICTS: OrderedDict[tuple[Any, ...], list[str]] = OrderedDict()
_VERDICTS_KEPT = 256


def dataset_for(bars: Bars, spec: dict[str, Any] | None, *, horizon: int | None = None) -> Dataset:
    """`build_dataset(bars, spec, horizon=horizon)`, kept for the next caller with the same bars
    and resolved spec. Its arrays are read-only: every caller shares them."""
    key = _dataset_key(bars, spec, horizon)
    held = _DATASETS.get(key)
    if held is not None:
        _DATASETS.move_to_end(key)
        return held
    dataset = build_dataset(bars, spec, horizon=horizon)
    dataset.features.flags.writeable = False
    if isinstance(dataset.label, np.ndarray):
        dataset.label.flags.writeable = False
    _DATASETS[key] = dataset
    while len(_DATASETS) > _DATASETS_KEPT or (
        len(_DATASETS) > 1
        and sum(d.features.nbytes for d in _DATASETS.values()) > _DATASETS_KEPT_BYTES
    ):
        _DATASETS.popitem(last=False)
    return dataset


def _dataset_key(bars: Bars, spec: dict[str, Any] | None, horizon: int | None) -> tuple[Any, ...]:
    resolved = validate_feature_spec(spec)
    if horizon is not None:
        resolved["horizon"] = horizon
    return (build_dataset, bars.sha256, len(bars), json.dumps(resolved, sort_keys=True))


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
    dataset = dataset_for(bars, feature_spec, horizon=horizon)
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

    A feature that peeks at later bars changes when those bars are cut off. For a dataset of
    `dataset_for` (prepare_training's) the verdict is kept for the same bars, spec, builder and
    cut: the same inputs give the same features, so the same verdict.
    """
    built = _dataset_key(bars, spec, dataset.horizon)
    key = (*built, cut)
    kept = _DATASETS.get(built) is dataset
    held = _VERDICTS.get(key) if kept else None
    if held is not None:
        _VERDICTS.move_to_end(key)
        return list(held)
    prefix = build_dataset(bars.slice(slice(0, cut)), spec, horizon=dataset.horizon)
    full = dataset.features[:cut]
    same = np.isclose(prefix.features, full, rtol=1e-9, atol=1e-12, equal_nan=True)
    leaking = [dataset.feature_names[i] for i in np.flatnonzero(~same.all(axis=0))]
    if kept:
        _VERDICTS[key] = leaking
        while len(_VERDICTS) > _VERDICTS_KEPT:
            _VERDICTS.popitem(last=False)
    return list(leaking)
