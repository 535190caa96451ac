"""Walk-forward windows and the rows a model may fit on: no label reaches a later window."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from training.data.dataset import Bars, Dataset
from training.data.features import build_dataset
from training.data.prepare import prepare_training
from training.data.split import Split, training_rows, walk_forward
from training.data.synthetic import generate_bars


def test_windows_are_adjacent_and_test_is_the_newest_quarter() -> None:
    split = walk_forward(1_000, horizon=4, warmup=200)

    assert split == Split(
        train=slice(200, 632),
        purge=slice(632, 636),
        validation=slice(636, 796),  # 20 % of the 800 rows after warm-up
        test_purge=slice(796, 800),
        evaluate=slice(800, 1_000),  # 25 %
    )
    assert split.test == split.evaluate
    assert split.as_dict() == {
        "train": [200, 632],
        "purge": [632, 636],
        "validation": [636, 796],
        "test_purge": [796, 800],
        "evaluate": [800, 1_000],
    }


@pytest.mark.parametrize("n_rows", [300, 501, 1_000, 7_919])
@pytest.mark.parametrize("horizon", [1, 4, 24])
@pytest.mark.parametrize(("test", "validation"), [(0.25, 0.2), (0.1, 0.1), (0.4, 0.3)])
def test_every_window_is_non_empty_and_purged_by_at_least_the_horizon(
    n_rows: int, horizon: int, test: float, validation: float
) -> None:
    split = walk_forward(
        n_rows, horizon=horizon, warmup=50, eval_fraction=test, validation_fraction=validation
    )

    windows = [window for _, window in split.windows()]
    assert windows[0].start == 50 and windows[-1].stop == n_rows
    for before, after in pairwise(windows):
        assert before.stop == after.start  # adjacent, in time order
    assert all(w.stop > w.start for w in (split.train, split.validation, split.test))
    assert split.purge.stop - split.purge.start >= horizon
    assert split.test_purge.stop - split.test_purge.start >= horizon
    # The label of the last validation row (t + horizon) ends before the test window starts.
    assert split.validation.stop - 1 + horizon < split.test.start
    assert split.train.stop - 1 + horizon < split.validation.start


def test_purges_can_be_longer_than_the_horizon() -> None:
    split = walk_forward(1_000, horizon=4, purge=24, eval_fraction=0.1)

    assert split.train == slice(0, 652)
    assert split.purge == slice(652, 676)
    assert split.validation == slice(676, 876)
    assert split.test_purge == slice(876, 900)
    assert split.evaluate == slice(900, 1_000)


def test_a_test_start_after_the_default_moves_every_window_later() -> None:
    default = walk_forward(1_000, horizon=4, warmup=200)
    later = walk_forward(1_000, horizon=4, warmup=200, test_start_min=900)

    assert later.test == slice(900, 1_000)
    assert later.test_purge == slice(896, 900)
    assert later.validation.stop - later.validation.start == 160  # the same share
    assert later.train == slice(200, 732)  # train takes the rows the test gave up
    assert walk_forward(1_000, horizon=4, warmup=200, test_start_min=10) == default


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_rows": 1_000, "horizon": 4, "purge": 3}, "purge must be an integer >= horizon"),
        ({"n_rows": 1_000, "horizon": 0}, "horizon must be an integer >= 1"),
        ({"n_rows": 1_000, "horizon": 4, "eval_fraction": 1.0}, "eval_fraction"),
        ({"n_rows": 1_000, "horizon": 4, "eval_fraction": 0.0}, "eval_fraction"),
        ({"n_rows": 1_000, "horizon": 4, "validation_fraction": 0.0}, "validation_fraction"),
        (
            {"n_rows": 1_000, "horizon": 4, "eval_fraction": 0.5, "validation_fraction": 0.5},
            "validation_fraction",
        ),
        ({"n_rows": 1_000, "horizon": 4, "warmup": -1}, "warmup"),
        ({"n_rows": 10, "horizon": 4, "warmup": 5}, "too few rows"),
        ({"n_rows": 205, "horizon": 4, "warmup": 200, "eval_fraction": 0.05}, "too few rows"),
        ({"n_rows": 1_000, "horizon": 4, "test_start_min": 1_000}, "test from row 1000 on"),
    ],
)
def test_impossible_splits_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        walk_forward(**kwargs)


def test_the_test_window_starts_a_purge_after_the_last_bar_a_search_saw() -> None:
    bars, _ = generate_bars(2_000, seed=5)
    _, default, _, _ = prepare_training(bars, {"horizon": 6}, eval_fraction=0.25)
    seen = bars.timestamp[default.test.start + 100]  # a search that read 100 rows further

    _, split, _, _ = prepare_training(bars, {"horizon": 6}, eval_fraction=0.25, test_after=seen)

    assert bars.timestamp[split.test.start - 6] > seen
    assert split.test.start == default.test.start + 100 + 1 + 6


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return build_dataset(generate_bars(1_200, seed=3)[0], horizon=6)


def test_training_rows_are_finite_and_their_labels_end_inside_train(dataset: Dataset) -> None:
    split = walk_forward(len(dataset), horizon=6, warmup=dataset.spec["lookback"])

    rows = training_rows(split, dataset)

    assert rows[0] == split.train.start == dataset.spec["lookback"]
    assert rows[-1] + dataset.horizon == split.train.stop - 1
    assert np.isfinite(dataset.features[rows]).all() and np.isfinite(dataset.label[rows]).all()


def test_training_rows_skip_rows_with_missing_features(dataset: Dataset) -> None:
    split = walk_forward(len(dataset), horizon=6)

    rows = training_rows(split, dataset)

    assert rows[0] == dataset.spec["lookback"]


def test_no_training_label_reads_a_price_from_a_later_window(dataset: Dataset) -> None:
    # Poison every close from the purge gap on: a label that reads one becomes huge.
    split = walk_forward(len(dataset), horizon=6, warmup=dataset.spec["lookback"])
    close = dataset.bars.close.copy()
    close[split.purge.start :] *= 1e6
    bars = dataset.bars
    poisoned = build_dataset(
        Bars(bars.timestamp, bars.open, bars.high, bars.low, close, bars.volume), horizon=6
    )

    rows = training_rows(split, poisoned)

    np.testing.assert_array_equal(poisoned.label[rows], dataset.label[rows])


def test_a_purge_shorter_than_the_dataset_horizon_is_refused(dataset: Dataset) -> None:
    split = walk_forward(len(dataset), horizon=2)
    with pytest.raises(ValueError, match="shorter than the label horizon"):
        training_rows(split, dataset)


def test_a_split_longer_than_the_dataset_is_refused(dataset: Dataset) -> None:
    split = walk_forward(len(dataset) + 10, horizon=6)
    with pytest.raises(ValueError, match="dataset has"):
        training_rows(split, dataset)
