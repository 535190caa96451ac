"""Queue routing on the real broker (each test runs on both): deep families to `gpu` when settings
say so, the other families to `training`, lifecycle passes to `lifecycle`, dispatch work to
`default`; every name carries the run's CLM_QUEUE_PREFIX."""

from __future__ import annotations

import pytest
from django.conf import settings
from kombu import Connection

from clm_project.celery import task_queue
from registry.models import TrainingJob
from registry.services import JobRequest, training_job_create, training_queue_for
from training.retraining.scheduler import SCHEDULES, beat_schedules_ensure

pytestmark = pytest.mark.django_db


def _message_ids(queue_name: str) -> set[str]:
    """Ids of the task messages waiting on this run's queue `queue_name` (taken off it)."""
    queue = next(q for q in settings.CELERY_TASK_QUEUES if q.name == queue_name)
    found = set()
    with Connection(settings.CELERY_BROKER_URL) as conn, conn.channel() as channel:
        bound = queue(channel)
        while (message := bound.get()) is not None:
            found.add(message.headers["id"])
            message.ack()
    return found


def _job(model_type: str, symbol: str) -> TrainingJob:
    job, _ = training_job_create(
        request=JobRequest(model_type=model_type, symbol=symbol, timeframe="1h")
    )
    return job


def _task_ids(jobs: list[TrainingJob]) -> set[str]:
    return set(
        TrainingJob.objects.filter(pk__in=[job.pk for job in jobs]).values_list(
            "celery_task_id", flat=True
        )
    )


def test_deep_families_go_to_the_gpu_queue_when_settings_say_so(
    purge_queues, settings, django_capture_on_commit_callbacks
):
    settings.CLM_GPU_FAMILIES = ["nhits", "patchtst"]
    with django_capture_on_commit_callbacks(execute=True):
        deep = [_job("nhits", "AAA"), _job("patchtst", "BBB")]
        trees = [_job("xgboost", "CCC"), _job("rl_v3", "DDD")]

    assert _message_ids(settings.CLM_GPU_QUEUE) == _task_ids(deep)
    assert _message_ids(settings.CLM_TRAINING_QUEUE) == _task_ids(trees)


def test_evolution_fits_a_deep_family_on_the_gpu_queue(settings):
    from evolution.dispatch import _evaluation

    settings.CLM_GPU_FAMILIES = ["nhits"]
    assert _evaluation("c1", "nhits").options["queue"] == settings.CLM_GPU_QUEUE
    assert _evaluation("c2", "xgboost").options["queue"] == settings.CLM_TRAINING_QUEUE


def test_without_gpu_families_every_job_goes_to_training(purge_queues, settings):
    settings.CLM_GPU_FAMILIES = []
    assert {training_queue_for(kind) for kind in ("nhits", "patchtst", "xgboost", "rl_v2")} == {
        settings.CLM_TRAINING_QUEUE
    }


def test_lifecycle_passes_have_their_own_queue_and_dispatch_stays_on_default():
    lifecycle = {
        "training.shadow_evaluate", "training.shadow_step", "training.experiments_evaluate",
        "training.experiment_step", "training.rollback_check", "training.rollback_step",
        "training.monitor_drift", "training.monitor_drift_step", "training.monitor_performance",
        "training.monitor_performance_step", "training.monitor_regime",
        "training.monitor_regime_step",
    }  # fmt: skip
    dispatch = {
        "training.scan_due_models", "training.scan_due_batch", "training.relay_outbox",
        "training.reap_stuck_jobs", "evolution.reap_runs",
    }  # fmt: skip
    assert {task_queue(name) for name in lifecycle} == {settings.CLM_LIFECYCLE_QUEUE}
    assert {task_queue(name) for name in dispatch} == {settings.CLM_DEFAULT_QUEUE}
    assert task_queue("training.run_training_job") == settings.CLM_TRAINING_QUEUE
    assert f"{settings.CLM_QUEUE_PREFIX}lifecycle" == settings.CLM_LIFECYCLE_QUEUE
    assert f"{settings.CLM_QUEUE_PREFIX}gpu" == settings.CLM_GPU_QUEUE


def test_beat_entries_go_to_the_queue_of_their_task():
    from django_celery_beat.models import PeriodicTask

    beat_schedules_ensure()
    queues = dict(PeriodicTask.objects.values_list("task", "queue"))
    assert queues == {entry.task: task_queue(entry.task) for entry in SCHEDULES}
    assert queues["training.shadow_evaluate"] == settings.CLM_LIFECYCLE_QUEUE
    assert queues["training.scan_due_models"] == settings.CLM_DEFAULT_QUEUE


def test_every_task_has_time_limits_on_the_lifecycle_queue():
    from clm_project.celery import app, tasks_loaded

    tasks_loaded()
    soft, hard = settings.CLM_LIFECYCLE_TIME_LIMITS
    on_lifecycle = [
        task for name, task in app.tasks.items() if task_queue(name) == settings.CLM_LIFECYCLE_QUEUE
    ]
    assert len(on_lifecycle) == 12
    assert {(task.soft_time_limit, task.time_limit) for task in on_lifecycle} == {(soft, hard)}
