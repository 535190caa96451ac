"""Thin Celery wrappers over the pipeline: tasks take ids and delegate to plain functions."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from training.policies import MAX_ATTEMPTS, TIME_LIMITS

logger = logging.getLogger(__name__)

STUCK_GRACE = timedelta(minutes=5)
PENDING_REDISPATCH_AFTER = timedelta(minutes=2)


@shared_task(name="training.run_training_job", bind=True, acks_late=True)
def run_training_job(self, job_id: str) -> str:
    """Run the pipeline for one job; a redelivered message (dead worker) may reclaim it."""
    from training.pipeline import run_job

    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    return run_job(job_id=job_id, redelivered=redelivered)


def enqueue_training_job(*, job_id: str, task_id: str) -> None:
    """Send a job to the training queue with its family's soft and hard time limits."""
    from registry.models import TrainingJob

    model_type = TrainingJob.objects.values_list("model_type", flat=True).get(pk=job_id)
    soft, hard = TIME_LIMITS.get(model_type, TIME_LIMITS["other"])
    run_training_job.apply_async(
        args=[job_id],
        task_id=task_id,
        queue=settings.CLM_TRAINING_QUEUE,
        soft_time_limit=soft,
        time_limit=hard,
    )


def reap_stuck_jobs_now() -> dict[str, int]:
    """Requeue or fail jobs stuck past their hard limit; redispatch stale pending ones."""
    from registry import services
    from registry.models import JobStatus, TrainingJob

    now = timezone.now()
    counts = {"requeued": 0, "failed": 0, "redispatched": 0}
    for job_id, model_type, started in TrainingJob.objects.filter(
        status=JobStatus.IN_PROGRESS
    ).values_list("pk", "model_type", "started_at"):
        hard = TIME_LIMITS.get(model_type, TIME_LIMITS["other"])[1]
        if started and now - started > timedelta(seconds=hard) + STUCK_GRACE:
            outcome = services.training_job_requeue_stuck(job_id=job_id, max_attempts=MAX_ATTEMPTS)
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
