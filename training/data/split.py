"""Walk-forward split: train | purge | validation | purge | test, the test window being the newest.

The label at row t looks `horizon` bars ahead, so a label near the end of one window would read
prices from the next. A purge gap of at least `horizon` rows between every pair of windows means
even the label of the last row of a window ends before the next window starts.

Each window has one job (docs/evaluation.md):

- train: what a model is fitted on;
- validation: every selection step (early stopping and calibration of the trees, the evolution's
  fitness, the shadow policy's "clearly better" pre-check);
- test (`evaluate`, the name the API and the manifest have always used): the promotion evaluation
  only (the gates, the comparison with production, the figures users see), bars no selection
  step has read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.data.dataset import Dataset

# Shares of the rows after the warm-up: the test share is the promotion policy's `eval_fraction`
# (0.25 unless an admin changes it); the validation share is this constant.
DEFAULT_TEST_FRACTION = 0.25
DEFAULT_VALIDATION_FRACTION = 0.2


@dataclass(frozen=True)
class Split:
    """Five adjacent row windows: train, purge, validation, test purge, evaluate (the test window).

    The purges are never used: they only keep labels of one window out of the next.
    """

    train: slice
    purge: slice
    validation: slice
    test_purge: slice
    evaluate: slice

    @property
    def test(self) -> slice:
        """The test window, under its own name (the same rows as `evaluate`)."""
        return self.evaluate

    def windows(self) -> tuple[tuple[str, slice], ...]:
        """(name, rows) of every window in time order."""
        return (
            ("train", self.train),
            ("purge", self.purge),
            ("validation", self.validation),
            ("test_purge", self.test_purge),
            ("evaluate", self.evaluate),
        )

    def as_dict(self) -> dict[str, list[int]]:
        """[start, stop) of each window, for recording what a model and an evaluation saw."""
        return {name: [window.start, window.stop] for name, window in self.windows()}


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def walk_forward(
    n_rows: int,
    *,
    horizon: int,
    eval_fraction: float = DEFAULT_TEST_FRACTION,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    purge: int | None = None,
    warmup: int = 0,
    test_start_min: int | None = None,
) -> Split:
    """Split rows warmup..n_rows-1 into train | purge | validation | purge | test.

    `eval_fraction` (the test window) and `validation_fraction` are shares of the rows after
    `warmup` (the feature look-back, whose rows are NaN), rounded to whole rows; train gets the
    rest. `purge` (both gaps) defaults to `horizon` and may not be smaller.

    `test_start_min` is the first row the test window may start at: a training job for a
    candidate chosen by a search passes the row after the last bar the search saw plus a purge,
    so its test bars are bars no selection has touched. When the default test window would start
    earlier, it starts there instead (it shrinks) and validation and train move along with it.
    """
    _check_int("n_rows", n_rows, 0)
    _check_int("horizon", horizon, 1)
    _check_int("warmup", warmup, 0)
    gap = horizon if purge is None else purge
    if isinstance(gap, bool) or not isinstance(gap, int | np.integer) or gap < horizon:
        raise ValueError(
            f"purge must be an integer >= horizon ({horizon}) so no label reaches the next "
            f"window, got {purge!r}"
        )
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be between 0 and 1, got {eval_fraction!r}")
    if not 0.0 < validation_fraction < 1.0 - eval_fraction:
        raise ValueError(
            f"validation_fraction must be between 0 and 1 - eval_fraction ({1 - eval_fraction:g})"
            f", got {validation_fraction!r}"
        )
    usable = n_rows - warmup
    n_test = round(usable * eval_fraction)
    n_valid = round(usable * validation_fraction)
    test_start = n_rows - n_test
    if test_start_min is not None:
        _check_int("test_start_min", test_start_min, 0)
        test_start = max(test_start, int(test_start_min))
    valid_start = test_start - gap - n_valid
    train_stop = valid_start - gap
    n_train, n_test = train_stop - warmup, n_rows - test_start
    if n_test < 1 or n_valid < 1 or n_train < 1:
        raise ValueError(
            f"too few rows for a walk-forward split: {n_rows} rows, warmup {warmup}, purges "
            f"{gap}, eval_fraction {eval_fraction} and validation_fraction {validation_fraction}"
            + ("" if test_start_min is None else f", test from row {test_start_min} on")
            + f" leave {max(n_train, 0)} training, {max(n_valid, 0)} validation and "
            f"{max(n_test, 0)} test rows"
        )
    return Split(
        train=slice(warmup, train_stop),
        purge=slice(train_stop, valid_start),
        validation=slice(valid_start, valid_start + n_valid),
        test_purge=slice(test_start - gap, test_start),
        evaluate=slice(test_start, n_rows),
    )


def training_rows(split: Split, dataset: Dataset) -> np.ndarray:
    """Indices of the train rows a model may fit on.

    A row qualifies when all its features and its label are finite and its label window t..t+h ends
    inside the training window, so fitting never reads a price from a later window.
    """
    if split.evaluate.stop > len(dataset):
        raise ValueError(f"split covers {split.evaluate.stop} rows, dataset has {len(dataset)}")
    for name, gap in (("purge", split.purge), ("test_purge", split.test_purge)):
        if gap.stop - gap.start < dataset.horizon:
            raise ValueError(
                f"split's {name} gap ({gap.stop - gap.start} rows) is shorter than the label "
                f"horizon ({dataset.horizon})"
            )
    start, stop = split.train.start, split.train.stop - dataset.horizon
    if stop <= start:
        return np.empty(0, dtype=np.int64)
    rows = np.arange(start, stop)
    usable = np.isfinite(dataset.features[start:stop]).all(axis=1) & np.isfinite(
        dataset.label[start:stop]
    )
    return rows[usable]
