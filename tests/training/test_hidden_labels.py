"""Positions never see labels: every family's positions() gets the dataset with its labels hidden,
and a model that reads them fails loudly, in the pipeline too."""

from __future__ import annotations

import numpy as np
import pytest

from registry.models import EvaluationResult, JobStatus, ModelVersion
from registry.services import JobRequest, training_job_create
from training import trainers
from training.data.dataset import Dataset, HiddenLabels, LabelsHidden
from training.data.features import build_dataset
from training.data.synthetic import generate_bars
from training.pipeline import run_job
from training.trainers import trainer_class
from training.trainers.xgboost import XGBoostTrainer

WINDOW = slice(1_010, 1_500)


@pytest.fixture(scope="module")
def data() -> Dataset:
    bars, _ = generate_bars(1_500, seed=7)
    return build_dataset(bars)


class PeekingTrainer(XGBoostTrainer):
    """Trades the sign of the label it is not allowed to read: perfect hindsight."""

    model_type = "xgboost"
    seen: list[Dataset] = []

    def _positions(self, data: Dataset, window: slice) -> np.ndarray:
        PeekingTrainer.seen.append(data)
        return np.sign(np.nan_to_num(data.label[window]))


def test_hidden_labels_refuse_every_use():
    labels = HiddenLabels(10)
    uses = [
        lambda: labels[3],
        lambda: labels[2:5],
        lambda: np.asarray(labels),
        lambda: np.isfinite(labels),
        lambda: np.nan_to_num(labels),
        lambda: labels > 0,
        lambda: labels * 2.0,
        lambda: np.ones(10) + labels,
        lambda: len(labels),
        lambda: list(labels),
        lambda: labels.shape,
        lambda: bool(labels),
    ]
    for use in uses:
        with pytest.raises(LabelsHidden, match="labels are hidden"):
            use()


def test_positions_get_features_and_bars_but_no_labels(data):
    trainer = PeekingTrainer({"n_estimators": 20}, seed=1)
    trainer.fit(data, slice(0, 1_000))
    PeekingTrainer.seen.clear()
    with pytest.raises(LabelsHidden):
        trainer.positions(data, WINDOW)
    [given] = PeekingTrainer.seen
    assert isinstance(given.label, HiddenLabels)
    assert given.features is data.features and given.bars is data.bars
    assert np.isfinite(data.label[WINDOW.start])  # the caller's own dataset keeps its labels


@pytest.mark.parametrize("family", ["xgboost", "lightgbm"])
def test_the_real_families_trade_without_labels(family, data):
    trainer = trainer_class(family)({"n_estimators": 20}, seed=1)
    trainer.fit(data, slice(0, 1_000))
    positions = trainer.positions(data.unlabelled(), WINDOW)
    assert np.array_equal(positions, trainer.positions(data, WINDOW))
    assert np.isfinite(positions).all() and len(positions) == WINDOW.stop - WINDOW.start


@pytest.mark.django_db
def test_a_model_that_reads_labels_fails_its_job_before_it_is_scored(btc_bars, monkeypatch):
    monkeypatch.setitem(trainers._REGISTRY, "xgboost", f"{__name__}:PeekingTrainer")
    job, _ = training_job_create(
        request=JobRequest(
            model_type="xgboost", symbol=btc_bars, timeframe="1h", params={"n_estimators": 20}
        ),
        dispatch=False,
    )
    assert run_job(job_id=str(job.pk)) == JobStatus.FAILED
    job.refresh_from_db()
    # Its first positions are the validation window's, taken in the train step: no version is
    # registered, nothing is scored.
    assert job.error_step == "train" and "labels are hidden" in job.error_message
    assert not EvaluationResult.objects.exists()
    assert not ModelVersion.objects.exists()
