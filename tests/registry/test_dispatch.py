"""The registry sends a training job by task name: it imports nothing of the training app, yet the
job runs in this process when Celery is eager (the demo without a broker)."""

from __future__ import annotations

import pytest

from clm_project.celery import app as celery_app
from registry.models import JobStatus, TrainingJob
from registry.services import JobRequest, training_job_create
from tests.training.conftest import store_bars


@pytest.mark.slow
@pytest.mark.django_db
def test_a_job_sent_by_name_runs_in_process_when_celery_is_eager(
    monkeypatch, django_capture_on_commit_callbacks
):
    store_bars("BTCUSDT", 3_000, seed=11)
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)
    with django_capture_on_commit_callbacks(execute=True):
        job, created = training_job_create(
            request=JobRequest(
                model_type="xgboost", symbol="BTCUSDT", timeframe="1h",
                params={"n_estimators": 20, "max_depth": 2},
            ),
        )  # fmt: skip
    assert created
    job = TrainingJob.objects.get(pk=job.pk)
    assert job.status == JobStatus.COMPLETED and job.version is not None
