"""Every Celery task of the training app: thin wrappers that take ids and delegate to plain
functions a test can call directly. The registered names ("training.<name>") are what celery-beat
entries and other services reference, so they never change with the module layout."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from clm_project.celery import fan_out, send_task_by_name
from clm_project.metrics import lifecycle_outcomes_count
from registry import services
from registry.models import JobStatus, TrainingJob
from training.retraining import events, scheduler
from training.retraining.monitors import services as monitors

logger = logging.getLogger(__name__)

STUCK_GRACE = timedelta(minutes=5)
LIVENESS_KEPT = timedelta(days=1)


# ignore_result: the job's row is the result; sending never waits on the result backend.
@shared_task(name="training.run_training_job", bind=True, acks_late=True, ignore_result=True)
def run_training_job(self, job_id: str) -> str:
    """Run the pipeline for one job; a redelivered message (dead worker) may reclaim it."""
    from training.pipeline import run_job

    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    return run_job(job_id=job_id, redelivered=redelivered)


def reap_stuck_jobs_now() -> dict[str, int]:
    """Keep every active job moving; beat runs it every 15 s (retraining.scheduler.SCHEDULES).

    - in progress with a stale heartbeat (its worker died) or past its hard limit: requeued, or
      failed after CLM_TRAINING_MAX_ATTEMPTS; a version the lost attempt left in `training` is
      failed;
    - queued past the dispatch timeout without a claim (a lost message): sent again, and failed
      after CLM_DISPATCH_MAX_TRIES sends in vain (not counted while the queue is busy);
    - pending past CLM_PENDING_REDISPATCH_AFTER (the broker was down): dispatched again, until
      the broker fails once more in this pass;
    - waiting (if_active=queue) with no active job left on its model: started.
    """
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.CLM_JOB_HEARTBEAT_TIMEOUT)
    counts = {"requeued": 0, "failed": 0, "completed": 0, "redispatched": 0, "dispatched": 0}
    running = TrainingJob.objects.filter(status=JobStatus.IN_PROGRESS).values_list(
        "pk", "model_type", "started_at", "heartbeat_at", "step"
    )
    busy = False
    for job_id, model_type, started, beat, step in running:
        hard = services.time_limits_for(model_type)[1]
        last_sign = beat or started
        if last_sign is not None and last_sign < stale_before:
            why = (
                f"worker stopped during step {step!r}: no heartbeat for "
                f"{(now - last_sign).total_seconds():.0f} s"
            )
        elif started and now - started > timedelta(seconds=hard) + STUCK_GRACE:
            why = f"stuck in step {step!r} past its time limit"
        else:
            busy = True
            continue
        outcome = services.training_job_requeue_stuck(
            job_id=job_id, max_attempts=settings.CLM_TRAINING_MAX_ATTEMPTS, why=why
        )
        counts[outcome] = counts.get(outcome, 0) + 1
    lost_before = now - timedelta(seconds=settings.CLM_DISPATCH_TIMEOUT)
    queued = TrainingJob.objects.filter(status=JobStatus.QUEUED).filter(
        Q(dispatched_at__lt=lost_before) | Q(dispatched_at__isnull=True, created_at__lt=lost_before)
    )
    for job_id in queued.values_list("pk", flat=True):
        outcome = services.training_job_redispatch(
            job_id=job_id, max_tries=settings.CLM_DISPATCH_MAX_TRIES, count=not busy
        )
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome == "broker_down":
            break
    pending_before = now - timedelta(seconds=settings.CLM_PENDING_REDISPATCH_AFTER)
    for job_id in TrainingJob.objects.filter(
        status=JobStatus.PENDING, created_at__lt=pending_before
    ).values_list("pk", flat=True):
        if not services.training_job_dispatch(job_id=job_id):
            counts["broker_down"] = counts.get("broker_down", 0) + 1
            break
        counts["dispatched"] += 1
    # Waiting jobs whose active job ended without releasing them (a crash between the two).
    waiting = TrainingJob.objects.filter(status=JobStatus.WAITING)
    for model_pk in set(waiting.values_list("model_id", flat=True)):
        if services.training_job_release_waiting(model_pk=model_pk):
            counts["released"] = counts.get("released", 0) + 1
    services.liveness_prune(before=now - LIVENESS_KEPT)
    if any(counts.values()):
        logger.warning("reaper: %s", counts)
    return counts


@shared_task(name="training.reap_stuck_jobs")
def reap_stuck_jobs() -> dict[str, int]:
    return reap_stuck_jobs_now()


# Retraining: the periodic scan, the outbox relay and the monitors, run by celery-beat (see
# training.retraining.scheduler.SCHEDULES). The scan and the monitors fan out: the beat task lists
# what is due and sends a task per batch of models (scan, on the default queue) or per model or
# series (monitors, on the lifecycle queue), which workers on every machine share.

SOFT, HARD = settings.CLM_LIFECYCLE_TIME_LIMITS


@shared_task(name="training.scan_due_models")
def scan_due_models() -> dict[str, int]:
    scan = scheduler.periodic_scan(
        send=lambda scan_id, batch: send_task_by_name(
            "training.scan_due_batch", args=[scan_id, batch]
        )
    )
    return {
        "scan": scan.pk,
        "models": scan.models_checked,
        "due": scan.due,
        "deferred": scan.deferred,
    }


@shared_task(name="training.scan_due_batch")
def scan_due_batch(scan_id: int, items: list[dict[str, Any]]) -> dict[str, int]:
    counts = scheduler.periodic_scan_batch(scan_id=scan_id, items=items)
    lifecycle_outcomes_count("scan", counts)
    return counts


@shared_task(name="training.relay_outbox", ignore_result=True)
def relay_outbox() -> dict[str, Any]:
    """A run that could not publish everything fails (the next tick retries those events)."""
    result = events.outbox_relay()
    if result.error:
        raise events.OutboxRelayError(
            f"outbox relay stopped after {result.published} events: {result.error}"
        )
    return {"published": result.published, "error": result.error}


def _monitor_pass(monitor: str, step_task: str, items: list[Any]) -> dict[str, int]:
    sent = fan_out(step_task, items)
    logger.info("%s monitor: %s readings sent", monitor, sent)
    return {"sent": sent}


def _monitor_counted(monitor: str, counts: dict[str, int]) -> dict[str, int]:
    lifecycle_outcomes_count(monitor, counts)
    return counts


@shared_task(name="training.monitor_drift", soft_time_limit=SOFT, time_limit=HARD)
def monitor_drift() -> dict[str, int]:
    return _monitor_pass("drift", "training.monitor_drift_step", monitors.production_version_ids())


@shared_task(name="training.monitor_drift_step", soft_time_limit=SOFT, time_limit=HARD)
def monitor_drift_step(version_id: int) -> dict[str, int]:
    return _monitor_counted("drift", monitors.drift_monitor_step(version_id=version_id))


@shared_task(name="training.monitor_performance", soft_time_limit=SOFT, time_limit=HARD)
def monitor_performance() -> dict[str, int]:
    return _monitor_pass(
        "performance", "training.monitor_performance_step", monitors.production_version_ids()
    )


@shared_task(name="training.monitor_performance_step", soft_time_limit=SOFT, time_limit=HARD)
def monitor_performance_step(version_id: int) -> dict[str, int]:
    return _monitor_counted("performance", monitors.performance_monitor_step(version_id=version_id))


@shared_task(name="training.monitor_regime", soft_time_limit=SOFT, time_limit=HARD)
def monitor_regime() -> dict[str, int]:
    series = [list(pair) for pair in monitors.traded_series()]
    return _monitor_pass("regime", "training.monitor_regime_step", series)


@shared_task(name="training.monitor_regime_step", soft_time_limit=SOFT, time_limit=HARD)
def monitor_regime_step(series: list[str]) -> dict[str, int]:
    symbol, timeframe = series
    return _monitor_counted(
        "regime", monitors.regime_monitor_step(symbol=symbol, timeframe=timeframe)
    )
