"""Nothing stays stuck: lost messages, stale heartbeats, dead attempts (the reaper's services)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from registry import services
from registry.models import JobStatus, LifecycleEvent, ModelStatus, TrainingJob
from tests.conftest import version_add
from training.pipeline import STEPS, run_job
from training.tasks import reap_stuck_jobs_now

pytestmark = pytest.mark.django_db

LONG_AGO = timedelta(hours=1)


def _job(symbol: str = "LOSTUSD", **updates) -> TrainingJob:
    job, _ = services.training_job_create(
        request=services.JobRequest(model_type="xgboost", symbol=symbol, timeframe="1h"),
        dispatch=False,
    )
    if updates:
        TrainingJob.objects.filter(pk=job.pk).update(**updates)
        job.refresh_from_db()
    return job


def _queued_but_never_sent(symbol: str = "LOSTUSD") -> TrainingJob:
    """The message was lost: the row says queued, the broker has nothing."""
    return _job(
        symbol,
        status=JobStatus.QUEUED,
        celery_task_id="lost-message",
        dispatched_at=timezone.now() - LONG_AGO,
    )


def test_a_lost_message_is_sent_again_then_the_job_fails_clearly(settings, training_queue):
    settings.CLM_DISPATCH_MAX_TRIES = 3
    job = _queued_but_never_sent()

    for sent in (2, 3):
        assert reap_stuck_jobs_now()["redispatched"] == 1
        job.refresh_from_db()
        assert job.status == JobStatus.QUEUED and job.redispatches == sent - 1
        assert timezone.now() - job.dispatched_at < timedelta(seconds=30)
        TrainingJob.objects.filter(pk=job.pk).update(dispatched_at=timezone.now() - LONG_AGO)

    assert reap_stuck_jobs_now()["failed"] == 1
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.error_step == "queued"
    assert job.error_message.startswith("never picked up by a worker: sent 3 times")
    assert "is a worker consuming the training queue?" in job.error_message
    # The model is free again: a new trigger makes a new job instead of joining the dead one.
    assert _job().pk != job.pk


def test_a_queued_job_waiting_behind_a_running_one_is_resent_but_not_failed(
    settings, training_queue
):
    settings.CLM_DISPATCH_MAX_TRIES = 1
    _job("BUSYUSD", status=JobStatus.IN_PROGRESS, attempts=1, started_at=timezone.now(),
         heartbeat_at=timezone.now())  # fmt: skip
    job = _queued_but_never_sent()
    assert reap_stuck_jobs_now()["redispatched"] == 1
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.redispatches == 0


def test_a_fresh_queued_job_is_left_alone(settings):
    job = _job(status=JobStatus.QUEUED, celery_task_id="x", dispatched_at=timezone.now())
    assert not any(reap_stuck_jobs_now().values())
    assert TrainingJob.objects.get(pk=job.pk).status == JobStatus.QUEUED


def test_a_stale_heartbeat_requeues_the_job_and_fails_its_training_version(
    django_capture_on_commit_callbacks,
):
    job = _job()
    assert services.training_job_claim(job_id=job.pk)
    job.refresh_from_db()
    version = services.model_version_register(
        model=job.model, job=job, params={}, feature_spec={}, training_metrics={}, manifest={},
        job_attempt=job.attempts,
    )  # fmt: skip
    TrainingJob.objects.filter(pk=job.pk).update(
        step="evaluate", heartbeat_at=timezone.now() - timedelta(seconds=61)
    )
    with django_capture_on_commit_callbacks(execute=False) as dispatches:
        assert reap_stuck_jobs_now()["requeued"] == 1
    assert len(dispatches) == 1
    job.refresh_from_db()
    version.refresh_from_db()
    assert job.status == JobStatus.PENDING and job.version is None and job.attempts == 1
    assert "no heartbeat for 61 s" in job.error_message
    assert version.status == ModelStatus.FAILED
    audit = LifecycleEvent.objects.filter(version=version).latest("id")
    assert audit.actor == "reaper" and f"attempt 1 of job {job.pk} lost" in audit.reason

    # The lost attempt, if it still ran somewhere, can write nothing more to the job.
    with pytest.raises(services.AttemptLost):
        services.training_job_step_start(job_id=job.pk, step="save_evaluation", attempt=1)
    assert services.training_job_claim(job_id=job.pk)  # the next attempt
    with pytest.raises(services.AttemptLost):
        services.model_version_register(
            model=job.model, job=job, params={}, feature_spec={}, training_metrics={},
            manifest={}, job_attempt=1,
        )  # fmt: skip
    assert not services.training_job_heartbeat(job_id=job.pk, attempt=1)
    assert services.training_job_heartbeat(job_id=job.pk, attempt=2)


def test_a_stale_job_at_its_last_attempt_fails(settings):
    then = timezone.now() - LONG_AGO
    job = _job(
        status=JobStatus.IN_PROGRESS, attempts=2, step="train", started_at=then, heartbeat_at=then
    )
    assert reap_stuck_jobs_now()["failed"] == 1
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.error_message.startswith("worker stopped during step 'train'")
    assert job.error_message.endswith("gave up after 2 attempts")


def test_an_attempt_that_died_after_its_verdict_completes_the_job():
    """A version with its evaluation and decision: the work is done, training again would make
    a second live version."""
    job = _job()
    services.training_job_claim(job_id=job.pk)
    version = version_add(model_type="xgboost", symbol="LOSTUSD", status=ModelStatus.CANDIDATE)
    TrainingJob.objects.filter(pk=job.pk).update(
        version=version, heartbeat_at=timezone.now() - LONG_AGO
    )
    assert reap_stuck_jobs_now()["completed"] == 1
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED and job.version == version


def test_a_redelivery_leaves_a_job_with_a_fresh_heartbeat_to_its_live_worker():
    job = _job()
    services.training_job_claim(job_id=job.pk)
    assert run_job(job_id=str(job.pk), redelivered=True) == JobStatus.IN_PROGRESS
    job.refresh_from_db()
    assert job.attempts == 1 and job.step == "claimed"


SEEN: list[tuple[str, object, float]] = []


def recording_loader(symbol: str, timeframe: str, window):
    """The default market-data source, noting what the job row says while it is in fetch_data."""
    from training.data import fetch_training_data

    SEEN.append(
        TrainingJob.objects.values_list("step", "step_started_at", "progress").get(symbol=symbol)
    )
    return fetch_training_data(symbol, timeframe, window)


def test_the_job_shows_the_step_it_is_in_and_since_when(btc_bars, settings, admin_client):
    settings.CLM_DATA_LOADER = "tests.training.test_liveness.recording_loader"
    SEEN.clear()
    job, _ = services.training_job_create(
        request=services.JobRequest(
            model_type="xgboost", symbol="BTCUSDT", timeframe="1h",
            params={"n_estimators": 20, "max_depth": 2},
        ),
        dispatch=False,
    )  # fmt: skip
    before = timezone.now()
    assert run_job(job_id=str(job.pk)) == JobStatus.COMPLETED
    [(step, since, progress)] = SEEN
    assert step == "fetch_data" and before <= since <= timezone.now()
    assert progress == STEPS["start"]  # start is over once the job is claimed

    # The admin's job list: the current step and for how long, while in progress.
    job = _job("ADMINUSD")
    services.training_job_claim(job_id=job.pk)
    services.training_job_step_start(job_id=job.pk, step="train", attempt=1)
    page = admin_client.get("/admin/registry/trainingjob/").content.decode()
    assert re.search(r'field-current_step">train \(for \d+ s\)<', page)
    assert re.search(r'field-heartbeat_age">\d+ s ago<', page)
