"""Every Celery task of the training app: thin wrappers that take ids and delegate to plain
functions a test can call directly. The registered names ("training.<name>") are what celery-beat
entries and other services reference, so they never change with the module layout."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from registry import services
from registry.models import JobStatus, TrainingJob
from training.retraining import events, scheduler
from training.retraining.monitors import services as monitors

logger = logging.getLogger(__name__)

STUCK_GRACE = timedelta(minutes=5)
PENDING_REDISPATCH_AFTER = timedelta(minutes=2)


@shared_task(name="training.run_training_job", bind=True, acks_late=True)
def run_training_job(self, job_id: str) -> str:
    """Run the pipeline for one job; a redelivered message (dead worker) may reclaim it."""
    from training.pipeline import run_job

    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    return run_job(job_id=job_id, redelivered=redelivered)


def reap_stuck_jobs_now() -> dict[str, int]:
    """Requeue or fail jobs stuck past their hard limit; redispatch stale pending ones."""
    now = timezone.now()
    counts = {"requeued": 0, "failed": 0, "redispatched": 0}
    for job_id, model_type, started in TrainingJob.objects.filter(
        status=JobStatus.IN_PROGRESS
    ).values_list("pk", "model_type", "started_at"):
        hard = services.time_limits_for(model_type)[1]
        if started and now - started > timedelta(seconds=hard) + STUCK_GRACE:
            outcome = services.training_job_requeue_stuck(
                job_id=job_id, max_attempts=settings.CLM_TRAINING_MAX_ATTEMPTS
            )
            counts[outcome] = counts.get(outcome, 0) + 1
    for job_id in TrainingJob.objects.filter(
        status=JobStatus.PENDING, created_at__lt=now - PENDING_REDISPATCH_AFTER
    ).values_list("pk", flat=True):
        services.training_job_dispatch(job_id=job_id)
        counts["redispatched"] += 1
    if any(counts.values()):
        logger.warning("reaper: %s", counts)
    return counts


@shared_task(name="training.reap_stuck_jobs")
def reap_stuck_jobs() -> dict[str, int]:
    return reap_stuck_jobs_now()


# Retraining: the periodic scan, the outbox relay and the monitors, run by celery-beat (see
# training.retraining.scheduler.SCHEDULES).


@shared_task(name="training.scan_due_models")
def scan_due_models() -> dict[str, int]:
    scan = scheduler.periodic_scan()
    return {
        "models": scan.models_checked,
        "due": scan.due,
        "created": scan.created,
        "joined": scan.joined,
        "skipped": scan.skipped,
        "deferred": scan.deferred,
    }


@shared_task(name="training.relay_outbox", ignore_result=True)
def relay_outbox() -> dict[str, Any]:
    """A run that could not publish everything fails (the next tick retries those events)."""
    result = events.outbox_relay()
    if result.error:
        raise events.OutboxRelayError(
            f"outbox relay stopped after {result.published} events: {result.error}"
        )
    return {"published": result.published, "error": result.error}


@shared_task(name="training.monitor_drift")
def monitor_drift() -> dict[str, int]:
    return monitors.drift_monitor_run_all()


@shared_task(name="training.monitor_performance")
def monitor_performance() -> dict[str, int]:
    return monitors.performance_monitor_run_all()


@shared_task(name="training.monitor_regime")
def monitor_regime() -> dict[str, int]:
    return monitors.regime_monitor_run_all()
