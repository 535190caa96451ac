"""End to end through a real Celery worker on the real broker and PostgreSQL."""

from __future__ import annotations

import time

import pytest

from registry.models import EvaluationResult, JobStatus, ModelStatus, OutboxEvent, TrainingJob
from training.trainers import DEMO_PARAMS

from .conftest import store_bars

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TERMINAL = {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}


def wait_for(job_id: str, *, statuses=TERMINAL, timeout: float = 180.0) -> TrainingJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = TrainingJob.objects.select_related("version").get(pk=job_id)
        if job.status in statuses:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job.status} at step {job.step} after {timeout}s")


def test_post_train_runs_the_pipeline_on_a_worker(live_worker, operator_client):
    store_bars("BTCUSDT", 6_000, seed=11)
    response = operator_client.post(
        "/clm/train",
        {"model_type": "xgboost", "symbol": "BTCUSDT", "timeframe": "1h",
         "params": {"n_estimators": 80, "max_depth": 3}},
        format="json",
    )  # fmt: skip
    assert response.status_code == 202, response.content
    job = wait_for(response.json()["id"])
    assert job.status == JobStatus.COMPLETED, job.error_message
    assert job.celery_task_id and job.attempts == 1
    version = job.version
    evaluation = EvaluationResult.objects.get(version=version)
    expected = ModelStatus.PRODUCTION if evaluation.passed else ModelStatus.FAILED
    assert version.status == expected
    events = set(OutboxEvent.objects.filter(model_id="xgboost-btcusdt-1h").values_list(
        "event_type", flat=True))  # fmt: skip
    assert {"training_job_created", "model_trained", "model_evaluated"} <= events
    assert ("model_promoted" in events) == evaluation.passed
    detail = operator_client.get(f"/clm/jobs/{job.pk}").json()
    assert detail["status"] == "completed" and detail["progress"] == 1.0


@pytest.mark.parametrize("family", ["nhits", "patchtst"])
def test_deep_families_train_on_a_worker(live_worker, operator_client, family):
    """neuralforecast imports ray.tune, which reads sys.stdout.encoding in the worker's child."""
    store_bars("BTCUSDT", 3_000, seed=11)
    response = operator_client.post(
        "/clm/train",
        {"model_type": family, "symbol": "BTCUSDT", "timeframe": "1h",
         "params": DEMO_PARAMS[family]},
        format="json",
    )  # fmt: skip
    assert response.status_code == 202, response.content
    job = wait_for(response.json()["id"], timeout=600)
    assert job.status == JobStatus.COMPLETED, job.error_message
    assert job.version.status != ModelStatus.TRAINING
    assert EvaluationResult.objects.filter(version=job.version).exists()
