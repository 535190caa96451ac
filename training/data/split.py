"""Walk-forward split: train on the past, skip a purge gap, evaluate on the bars after it.

The label at row t looks `horizon` bars ahead, so a label near the end of the training window would
read prices from the evaluation window. A purge gap of at least `horizon` rows between the two
windows means even the label of the last training row ends before evaluation starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.data.dataset import Dataset


@dataclass(frozen=True)
class Split:
    """Three adjacent row windows: train, then purge (never used), then evaluate."""

    train: slice
    purge: slice
    evaluate: slice

    def as_dict(self) -> dict[str, list[int]]:
        """[start, stop) of each window, for recording what an evaluation saw."""
        return {
            name: [window.start, window.stop]
            for name, window in (
                ("train", self.train),
                ("purge", self.purge),
                ("evaluate", self.evaluate),
            )
        }


def walk_forward(
    n_rows: int,
    *,
    horizon: int,
    eval_fraction: float = 0.25,
    purge: int | None = None,
    warmup: int = 0,
) -> Split:
    """Split rows warmup..n_rows-1 into train | purge | evaluate, evaluate being the newest rows.

    `eval_fraction` is the share of the rows after `warmup` (the feature look-back, whose rows are
    NaN) given to evaluation, rounded to whole rows. `purge` defaults to `horizon` and may not be
    smaller.
    """
    for name, value, minimum in (
        ("n_rows", n_rows, 0),
        ("horizon", horizon, 1),
        ("warmup", warmup, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    gap = horizon if purge is None else purge
    if isinstance(gap, bool) or not isinstance(gap, int | np.integer) or gap < horizon:
        raise ValueError(
            f"purge must be an integer >= horizon ({horizon}) so no label reaches the evaluation "
            f"window, got {purge!r}"
        )
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be between 0 and 1, got {eval_fraction!r}")

    usable = n_rows - warmup
    n_eval = round(usable * eval_fraction)
    n_train = usable - n_eval - gap
    if n_eval < 1 or n_train < 1:
        raise ValueError(
            f"too few rows for a walk-forward split: {n_rows} rows, warmup {warmup}, purge {gap} "
            f"and eval_fraction {eval_fraction} leave {max(n_train, 0)} training and "
            f"{max(n_eval, 0)} evaluation rows"
        )
    train_stop = warmup + n_train
    eval_start = train_stop + gap
    return Split(
        train=slice(warmup, train_stop),
        purge=slice(train_stop, eval_start),
        evaluate=slice(eval_start, n_rows),
    )


def training_rows(split: Split, dataset: Dataset) -> np.ndarray:
    """Indices of the train rows a model may fit on.

    A row qualifies when all its features and its label are finite and its label window t..t+h ends
    inside the training window, so fitting never reads a price from the purge or evaluation rows.
    """
    if split.evaluate.stop > len(dataset):
        raise ValueError(f"split covers {split.evaluate.stop} rows, dataset has {len(dataset)}")
    purge_rows = split.purge.stop - split.purge.start
    if purge_rows < dataset.horizon:
        raise ValueError(
            f"split's purge gap ({purge_rows} rows) is shorter than the label horizon "
            f"({dataset.horizon})"
        )
    start, stop = split.train.start, split.train.stop - dataset.horizon
    if stop <= start:
        return np.empty(0, dtype=np.int64)
    rows = np.arange(start, stop)
    usable = np.isfinite(dataset.features[start:stop]).all(axis=1) & np.isfinite(
        dataset.label[start:stop]
    )
    return rows[usable]
