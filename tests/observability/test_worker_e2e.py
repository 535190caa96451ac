"""A real Celery worker's metrics reach the web's /metrics (multiprocess mode) and its JSON logs
carry the job. The worker is a subprocess on the real broker (tests/conftest.py `live_worker`)."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import pytest

from registry.models import JobStatus, TrainingJob
from registry.services import JobRequest, training_job_create
from tests.training.conftest import store_bars

from .conftest import scrape, value

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker_env(tmp_path, monkeypatch) -> Path:
    """What a deployment sets for web and workers alike: a shared metrics directory, JSON logs."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    monkeypatch.setenv("LOG_FORMAT", "json")
    return directory


@pytest.fixture
def metrics_worker(worker_env, live_worker) -> str:
    """`live_worker` started after `worker_env`, so the subprocess inherits it."""
    return live_worker


def _wait(job_id: str, timeout: float = 180.0) -> TrainingJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = TrainingJob.objects.get(pk=job_id)
        if job.status in (JobStatus.COMPLETED, JobStatus.FAILED):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job.status} after {timeout}s")


def test_worker_metrics_and_logs(metrics_worker, worker_env, staff_client):
    store_bars("BTCUSDT", 3_000, seed=11)
    job, _ = training_job_create(
        request=JobRequest(
            model_type="xgboost", symbol="BTCUSDT", timeframe="1h",
            params={"n_estimators": 40, "max_depth": 3},
        )
    )  # fmt: skip
    job = _wait(str(job.pk))
    assert job.status == JobStatus.COMPLETED, job.error_message
    assert list(worker_env.glob("*.db")), "the worker wrote no metrics files"

    found = scrape(staff_client)
    steps = "clm_pipeline_step_duration_seconds_count"
    for step in ("start", "fetch_data", "train", "evaluate", "apply_gates"):
        assert value(found, steps, step=step, model_type="xgboost") == 1, step
    train_seconds = value(
        found, "clm_pipeline_step_duration_seconds_sum", step="train", model_type="xgboost"
    )
    assert train_seconds == pytest.approx(job.step_durations["train"], abs=0.01)
    jobs = "clm_training_job_duration_seconds_count"
    assert value(found, jobs, model_type="xgboost", status="completed") == 1
    tasks = "clm_celery_tasks_total"
    assert value(found, tasks, task="training.run_training_job", state="success") == 1
    assert value(found, "clm_celery_tasks_running", task="training.run_training_job") == 0
    assert value(found, "clm_training_jobs", status="completed", model_type="xgboost") == 1

    log = Path(tempfile.gettempdir()) / f"{metrics_worker.split('@')[0]}.log"
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    of_job = [line for line in lines if line.get("logger") == "training.pipeline"]
    assert of_job, "no JSON lines from the pipeline in the worker's log"
    for line in of_job:
        assert line["job_id"] == str(job.pk) and line["model_id"] == "xgboost-btcusdt-1h", line
        assert line["task_id"] == job.celery_task_id, line


def test_queue_consumers_are_the_workers_on_each_broker(live_worker, staff_client, broker):
    """RabbitMQ counts consumers; Redis reports none, so there the workers are asked."""
    found = scrape(staff_client)
    assert value(found, "clm_queue_consumers", queue="training") == 1, broker
    assert value(found, "clm_queue_consumers", queue="default") == 1, broker
    assert value(found, "clm_queue_depth_error", queue="training") == 0
