"""The periodic retraining scan, the schedule (next training per model) and the scheduler's status.

The scan is a celery-beat task (`training.scan_due_models`). A model is due when periodic
retraining is on for its type (policy enabled, interval > 0), it has no active job, and its last
training (latest job that was not cancelled, or latest version) is older than the interval; a model
never trained is due at once. Due models are triggered in priority order (the policy's periodic
priority, then the most overdue first), at most CLM_SCAN_MAX_JOBS per scan; the rest wait for the
next scan. Each goes through training.retraining.triggers like any other trigger (cooldown, budget,
record).

SCHEDULES lists CLM's celery-beat entries; `manage.py setup_schedules` writes them.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Max
from django.db.models.functions import Greatest
from django.utils import timezone

from clm_project.celery import task_queue
from registry.models import (
    ACTIVE_JOB_STATUSES,
    JobStatus,
    ModelVersion,
    RegisteredModel,
    TrainingJob,
    TriggerReason,
)
from training.models import SchedulerScan, TriggerOutcome, TriggerRecord, TriggerSource
from training.retraining.triggers import Origin, handle_periodic, retrain_policies, trigger_priority

logger = logging.getLogger(__name__)

NEXT_DUE_SHOWN = 10


@dataclass(frozen=True)
class PeriodicSchedule:
    """A celery-beat entry CLM needs: written by `manage.py setup_schedules`."""

    name: str
    task: str
    every: int
    period: str  # a django_celery_beat IntervalSchedule period: "seconds", "minutes", ...
    description: str


SCHEDULES: tuple[PeriodicSchedule, ...] = (
    PeriodicSchedule(
        "clm: periodic retraining scan", "training.scan_due_models", 15, "minutes",
        "Queue periodic jobs for models whose last training is older than their interval.",
    ),
    PeriodicSchedule(
        "clm: drift monitor", "training.monitor_drift", 60, "minutes",
        "Feature drift of every production model; over the threshold raises drift_detected.",
    ),
    PeriodicSchedule(
        "clm: performance monitor", "training.monitor_performance", 60, "minutes",
        "Live Sharpe of every production model; below the threshold raises "
        "performance_degraded.",
    ),
    PeriodicSchedule(
        "clm: regime monitor", "training.monitor_regime", 15, "minutes",
        "Market regime of every traded series; a confirmed change raises regime_change.",
    ),
    PeriodicSchedule(
        "clm: outbox relay", "training.relay_outbox", 5, "seconds",
        "Publish outbox events to the clm.events exchange (at least once).",
    ),
    PeriodicSchedule(
        "clm: reaper", "training.reap_stuck_jobs", 15, "seconds",
        "Take back jobs whose worker stopped (stale heartbeat) or that ran past their time "
        "limit; send lost queued jobs again; dispatch jobs left pending by a broker outage.",
    ),
    PeriodicSchedule(
        "clm: evolution reaper", "evolution.reap_runs", 1, "minutes",
        "Hand back claims of dead workers (stale heartbeat) and re-dispatch them; re-dispatch "
        "stalled evolution generations; keep candidate status in step with jobs.",
    ),
    PeriodicSchedule(
        "clm: shadow evaluation", "training.shadow_evaluate", 15, "minutes",
        "Paper-trade shadow versions beside production on new bars; promote, keep or retire.",
    ),
    PeriodicSchedule(
        "clm: experiment evaluation", "training.experiments_evaluate", 15, "minutes",
        "Test running A/B experiments on their paired returns; end them with a verdict.",
    ),
    PeriodicSchedule(
        "clm: automatic rollback", "training.rollback_check", 15, "minutes",
        "Roll production back to the previous valid version when it breaches its live limits.",
    ),
)  # fmt: skip


@dataclass(frozen=True)
class ScheduleEntry:
    model_id: str
    model_type: str
    symbol: str
    timeframe: str
    enabled: bool
    interval_hours: int
    priority: int
    last_training_at: datetime | None
    next_training_at: datetime | None
    due: bool
    active_job: bool


def schedule_entries(
    *,
    now: datetime | None = None,
    model_type: str | None = None,
    model_ids: Iterable[str] | None = None,
) -> list[ScheduleEntry]:
    """Every registered model as the scheduler sees it, in a handful of queries.

    Aggregates over the jobs and versions tables rather than a subquery per model: at 10,000
    models this stays well under a second.
    """
    now = now or timezone.now()
    policies = retrain_policies()
    models = RegisteredModel.objects.order_by("model_id")
    jobs = TrainingJob.objects.exclude(status=JobStatus.CANCELLED)
    versions = ModelVersion.objects.all()
    if model_type:
        models = models.filter(model_type=model_type)
        jobs = jobs.filter(model__model_type=model_type)
        versions = versions.filter(model__model_type=model_type)
    if model_ids is not None:
        model_ids = list(model_ids)
        models = models.filter(model_id__in=model_ids)
        jobs = jobs.filter(model__model_id__in=model_ids)
        versions = versions.filter(model__model_id__in=model_ids)
    last_job = dict(jobs.values_list("model_id").annotate(last=Max("created_at")).order_by())
    last_version = dict(
        versions.values_list("model_id").annotate(last=Max("created_at")).order_by()
    )
    active = set(
        TrainingJob.objects.filter(status__in=ACTIVE_JOB_STATUSES).values_list(
            "model_id", flat=True
        )
    )
    entries = []
    for pk, model_id, kind, symbol, timeframe in models.values_list(
        "pk", "model_id", "model_type", "symbol", "timeframe"
    ):
        policy = policies[kind]
        interval = policy.periodic_interval_hours
        enabled = policy.enabled and interval > 0
        known = [t for t in (last_job.get(pk), last_version.get(pk)) if t is not None]
        last = max(known) if known else None
        next_at = last + timedelta(hours=interval) if enabled and last else None
        has_active = pk in active
        entries.append(
            ScheduleEntry(
                model_id=model_id,
                model_type=kind,
                symbol=symbol,
                timeframe=timeframe,
                enabled=enabled,
                interval_hours=interval,
                priority=trigger_priority(policy, TriggerReason.PERIODIC),
                last_training_at=last,
                next_training_at=next_at,
                due=enabled and not has_active and (next_at is None or next_at <= now),
                active_job=has_active,
            )
        )
    return entries


_NEVER = datetime.min.replace(tzinfo=UTC)
_FOREVER = datetime.max.replace(tzinfo=UTC)


def get_next_training_times(
    *, now: datetime | None = None, model_type: str | None = None
) -> list[ScheduleEntry]:
    """The schedule, soonest first: due models (never trained first), then by next training time;
    models whose type has periodic retraining off come last."""
    entries = schedule_entries(now=now, model_type=model_type)
    return sorted(
        entries,
        key=lambda e: (
            not e.enabled,
            e.next_training_at or (_NEVER if e.enabled else _FOREVER),
            e.model_id,
        ),
    )


def due_models(*, now: datetime | None = None) -> list[ScheduleEntry]:
    """Due models in the order the scan triggers them: priority, then the longest overdue."""
    return _by_urgency(schedule_entries(now=now))


def _by_urgency(entries: list[ScheduleEntry]) -> list[ScheduleEntry]:
    due = (e for e in entries if e.due)
    return sorted(due, key=lambda e: (-e.priority, e.next_training_at or _NEVER, e.model_id))


def periodic_scan(
    *,
    now: datetime | None = None,
    max_jobs: int | None = None,
    send: Callable[[int, list[dict[str, Any]]], None] | None = None,
) -> SchedulerScan:
    """Trigger periodic retraining of the due models and record the scan.

    The due models go in batches of CLM_SCAN_BATCH_SIZE to `send(scan_id, batch)`: a worker sends
    each batch as a task of its own (training.tasks), so that workers on every machine share a
    scan over many models; without `send` the batches run here, one after the other. Each batch
    adds what it did to the scan's row (created, joined, skipped, finished_at).
    """
    started_at = timezone.now()
    started = time.perf_counter()
    cap = settings.CLM_SCAN_MAX_JOBS if max_jobs is None else max_jobs
    entries = schedule_entries(now=now)
    due = _by_urgency(entries)
    scan = SchedulerScan.objects.create(
        started_at=started_at,
        finished_at=timezone.now(),
        duration_ms=(time.perf_counter() - started) * 1000,
        models_checked=len(entries),
        due=len(due),
        created=0,
        joined=0,
        skipped=0,
        deferred=max(0, len(due) - cap),
    )
    items = [
        {
            "model_id": entry.model_id,
            "interval_hours": entry.interval_hours,
            "last_training_at": entry.last_training_at.isoformat()
            if entry.last_training_at
            else None,
        }
        for entry in due[:cap]
    ]
    size = max(1, settings.CLM_SCAN_BATCH_SIZE)
    for first in range(0, len(items), size):
        batch = items[first : first + size]
        if send is None:
            periodic_scan_batch(scan_id=scan.pk, items=batch)
        else:
            send(scan.pk, batch)
    if due:
        logger.info(
            "periodic scan %s: %s models, %s due, %s to trigger in %s batches",
            scan.pk, len(entries), len(due), len(items), -(-len(items) // size),
        )  # fmt: skip
    scan.refresh_from_db()
    return scan


def periodic_scan_batch(*, scan_id: int, items: list[dict[str, Any]]) -> dict[str, int]:
    """Trigger periodic retraining of one batch of a scan's due models; the triggers deduplicate
    (one active job per model), so a batch that runs twice creates nothing new."""
    outcomes: Counter[str] = Counter()
    for item in items:
        origin = Origin(
            source=TriggerSource.SCHEDULER,
            requested_by="scheduler",
            context={
                "interval_hours": item["interval_hours"],
                "last_training_at": item["last_training_at"],
            },
        )
        try:
            outcomes[handle_periodic(item["model_id"], origin=origin).outcome] += 1
        except Exception:  # one model's database trouble must not stop the scan
            logger.exception("periodic trigger of %s failed", item["model_id"])
            outcomes["failed"] += 1
    counts = {
        "created": outcomes[TriggerOutcome.CREATED],
        "joined": outcomes[TriggerOutcome.JOINED],
        "skipped": outcomes[TriggerOutcome.SKIPPED] + outcomes["failed"],
    }
    finished = timezone.now()
    started_at = SchedulerScan.objects.filter(pk=scan_id).values_list("started_at", flat=True)
    for began in started_at:
        SchedulerScan.objects.filter(pk=scan_id).update(
            created=F("created") + counts["created"],
            joined=F("joined") + counts["joined"],
            skipped=F("skipped") + counts["skipped"],
            finished_at=Greatest(F("finished_at"), finished),
            duration_ms=Greatest(F("duration_ms"), (finished - began).total_seconds() * 1000),
        )
    return counts


def scheduler_status(*, now: datetime | None = None) -> dict[str, Any]:
    """For GET /clm/status: the last scan, what is due next, jobs and triggers of the last day,
    and CLM's celery-beat entries as they stand (enabled, interval, last run)."""
    from django_celery_beat.models import PeriodicTask

    now = now or timezone.now()
    since = now - timedelta(hours=24)
    last = SchedulerScan.objects.order_by("-started_at", "-id").first()
    schedule = get_next_training_times(now=now)
    jobs = dict(
        TrainingJob.objects.filter(created_at__gte=since)
        .values_list("trigger_reason")
        .annotate(n=Count("pk"))
        .order_by()
    )
    triggers = dict(
        TriggerRecord.objects.filter(created_at__gte=since)
        .values_list("outcome")
        .annotate(n=Count("pk"))
        .order_by()
    )
    tasks = PeriodicTask.objects.filter(name__in=[s.name for s in SCHEDULES]).select_related(
        "interval"
    )
    return {
        "last_scan": None
        if last is None
        else {
            "started_at": last.started_at,
            "duration_ms": round(last.duration_ms, 1),
            "models_checked": last.models_checked,
            "due": last.due,
            "created": last.created,
            "joined": last.joined,
            "skipped": last.skipped,
            "deferred": last.deferred,
        },
        "due_now": sum(e.due for e in schedule),
        "next_due": [asdict(e) for e in schedule if e.enabled and not e.active_job][
            :NEXT_DUE_SHOWN
        ],
        "jobs_last_24h_by_trigger": {r: jobs.get(r, 0) for r in TriggerReason.values},
        "triggers_last_24h_by_outcome": {o: triggers.get(o, 0) for o in TriggerOutcome.values},
        "periodic_tasks": [
            {
                "name": task.name,
                "task": task.task,
                "enabled": task.enabled,
                "schedule": str(task.interval or task.crontab or ""),
                "last_run_at": task.last_run_at,
            }
            for task in tasks.order_by("name")
        ],
    }


def beat_schedules_ensure(*, reset: bool = False) -> list[tuple[str, str]]:
    """Create CLM's celery-beat entries; idempotent. Returns (name, what happened) per entry.

    An entry that exists keeps its interval and enabled flag (people change those in the admin);
    its task name, queue, description and expiry follow the code. `reset` restores the default
    interval and enables it again.
    """
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    done = []
    with transaction.atomic():
        for entry in SCHEDULES:
            interval, _ = IntervalSchedule.objects.get_or_create(
                every=entry.every, period=entry.period
            )
            # An expired message is dropped by the worker: beat's ticks do not pile up while no
            # worker runs, and a late run is not followed by a burst of stale ones.
            expire = int(timedelta(**{entry.period: entry.every}).total_seconds())
            code_owned = {
                "task": entry.task,
                "queue": task_queue(entry.task),
                "description": entry.description,
                "expire_seconds": expire,
            }
            task = PeriodicTask.objects.filter(name=entry.name).first()
            if task is None:
                PeriodicTask.objects.create(
                    name=entry.name, interval=interval, enabled=True, **code_owned
                )
                done.append((entry.name, "created"))
                continue
            for field, value in code_owned.items():
                setattr(task, field, value)
            if reset:
                task.interval, task.crontab, task.solar, task.clocked = interval, None, None, None
                task.enabled = True
            task.save()
            done.append((entry.name, "reset" if reset else "kept its schedule"))
    return done
