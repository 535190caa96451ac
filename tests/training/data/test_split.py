"""Walk-forward windows and the rows a model may fit on: no label reaches the evaluation window."""

from __future__ import annotations

import numpy as np
import pytest

from training.data.dataset import Bars, Dataset
from training.data.features import build_dataset
from training.data.split import Split, training_rows, walk_forward
from training.data.synthetic import generate_bars


def test_windows_are_adjacent_and_evaluate_is_the_newest_quarter() -> None:
    split = walk_forward(1_000, horizon=4, warmup=200)

    assert split == Split(train=slice(200, 796), purge=slice(796, 800), evaluate=slice(800, 1_000))
    assert split.as_dict() == {"train": [200, 796], "purge": [796, 800], "evaluate": [800, 1_000]}


def test_purge_can_be_longer_than_the_horizon() -> None:
    split = walk_forward(1_000, horizon=4, purge=24, eval_fraction=0.1)

    assert split.train == slice(0, 876)
    assert split.purge == slice(876, 900)
    assert split.evaluate == slice(900, 1_000)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_rows": 1_000, "horizon": 4, "purge": 3}, "purge must be an integer >= horizon"),
        ({"n_rows": 1_000, "horizon": 0}, "horizon must be an integer >= 1"),
        ({"n_rows": 1_000, "horizon": 4, "eval_fraction": 1.0}, "eval_fraction"),
        ({"n_rows": 1_000, "horizon": 4, "eval_fraction": 0.0}, "eval_fraction"),
        ({"n_rows": 1_000, "horizon": 4, "warmup": -1}, "warmup"),
        ({"n_rows": 10, "horizon": 4, "warmup": 5}, "too few rows"),
        ({"n_rows": 205, "horizon": 4, "warmup": 200, "eval_fraction": 0.05}, "too few rows"),
    ],
)
def test_impossible_splits_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        walk_forward(**kwargs)


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


def test_no_training_label_reads_a_price_from_the_evaluation_window(dataset: Dataset) -> None:
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
