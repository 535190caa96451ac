"""The only writers of registry rows. Every state change is one short transaction that also writes
its audit row and outbox event, so readers never see a change without its record.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, models, transaction
from django.db.models import Exists, F, Func, OuterRef, Q, Subquery, Value
from django.db.models.expressions import CombinedExpression
from django.utils import timezone
from django.utils.module_loading import import_string

from clm_project.celery import send_task_by_name
from clm_project.compiled import CompiledQuery, prepared_cursor
from clm_project.exceptions import DomainError, InvalidInput, NotFound
from registry import selectors
from registry.locks import model_lock
from registry.models import (
    ACTIVE_JOB_STATUSES,
    EvaluationResult,
    EventType,
    JobStatus,
    LifecycleAction,
    LifecycleEvent,
    Liveness,
    ModelStatus,
    ModelType,
    ModelVersion,
    OutboxEvent,
    RegisteredModel,
    Timeframe,
    TrainingJob,
    TriggerReason,
)

logger = logging.getLogger(__name__)

# Statuses a version may be promoted from; a retired one also needs a proven past (see below).
PROMOTABLE = {ModelStatus.CANDIDATE, ModelStatus.SHADOW, ModelStatus.RETIRED}
# The Celery task (registered by the training app) that runs one job's pipeline.
TRAINING_TASK = "training.run_training_job"


# ---------------------------------------------------------------------------------------------
# Events


def outbox_event_write(*, event_type: str, model_id: str, payload: dict[str, Any]) -> OutboxEvent:
    """Append an event to the outbox; call inside the transaction of the change it reports."""
    return OutboxEvent.objects.create(event_type=event_type, model_id=model_id, payload=payload)


def outbox_events_mark_published(*, event_ids: list[uuid.UUID]) -> None:
    """The relay got these events into the broker: never publish them again."""
    OutboxEvent.objects.filter(pk__in=event_ids).update(
        published_at=timezone.now(), attempts=F("attempts") + 1, last_error=""
    )


def outbox_events_mark_failed(*, limit: int, error: str) -> None:
    """Count a failed relay attempt on the oldest unpublished events (shown in admin and API)."""
    oldest = (
        OutboxEvent.objects.filter(published_at__isnull=True)
        .order_by("created_at")
        .values_list("pk", flat=True)[:limit]
    )
    OutboxEvent.objects.filter(pk__in=list(oldest)).update(
        attempts=F("attempts") + 1, last_error=error[:2_000]
    )


def _audit_row(
    *, version: ModelVersion, action: str, from_status: str, actor: str, reason: str
) -> LifecycleEvent:
    return LifecycleEvent(
        model_id=version.model_id,
        version=version,
        action=action,
        from_status=from_status,
        to_status=version.status,
        actor=actor,
        reason=reason,
    )


def _audit(
    *, version: ModelVersion, action: str, from_status: str, actor: str, reason: str
) -> LifecycleEvent:
    row = _audit_row(
        version=version, action=action, from_status=from_status, actor=actor, reason=reason
    )
    row.save(force_insert=True)
    return row


# ---------------------------------------------------------------------------------------------
# Liveness


def liveness_record(*, kind: str, name: str, info: dict[str, Any]) -> None:
    """A worker or celery-beat is alive now (registry.liveness calls this on an interval)."""
    Liveness.objects.update_or_create(
        name=name, defaults={"kind": kind, "seen_at": timezone.now(), "info": info}
    )


def liveness_prune(*, before: datetime) -> int:
    """Forget workers not seen since `before` (hostnames change as workers come and go)."""
    deleted, _ = Liveness.objects.filter(seen_at__lt=before).delete()
    return deleted


# ---------------------------------------------------------------------------------------------
# Registered models


def registered_model_get_or_create(
    *, model_type: str, symbol: str, timeframe: str
) -> RegisteredModel:
    if model_type not in ModelType.values:
        raise InvalidInput(f"unknown model type {model_type!r}", field="model_type")
    if timeframe not in Timeframe.values:
        raise InvalidInput(
            f"unknown timeframe {timeframe!r}; one of {', '.join(Timeframe.values)}",
            field="timeframe",
        )
    symbol = symbol.strip().upper()
    if not symbol or not symbol.replace("-", "").replace("_", "").isalnum():
        raise InvalidInput(f"invalid symbol {symbol!r}", field="symbol")
    model_id = RegisteredModel.make_model_id(model_type, symbol, timeframe)
    try:
        with transaction.atomic():
            model, _ = RegisteredModel.objects.get_or_create(
                model_type=model_type,
                symbol=symbol,
                timeframe=timeframe,
                defaults={"model_id": model_id},
            )
    except IntegrityError:
        # Another transaction created it between our read and insert.
        model = RegisteredModel.objects.get(
            model_type=model_type, symbol=symbol, timeframe=timeframe
        )
    return model


def _notes_save(
    obj: RegisteredModel | ModelVersion,
    *,
    description: str | None,
    notes: str | None,
    tags: Iterable[str] | None,
) -> None:
    """Save only the human-edited fields, never a stale copy of the others read earlier."""
    changes: dict[str, Any] = {"description": description, "notes": notes}
    if tags is not None:
        changes["tags"] = list(tags)
    fields = [name for name, value in changes.items() if value is not None]
    for name in fields:
        setattr(obj, name, changes[name])
    if fields:
        obj.save(update_fields=fields)


def registered_model_update_notes(
    *,
    model: RegisteredModel,
    description: str | None = None,
    notes: str | None = None,
    tags: Iterable[str] | None = None,
) -> RegisteredModel:
    """Edit a model line's description, notes and tags (never its stale `next_version`)."""
    _notes_save(model, description=description, notes=notes, tags=tags)
    return model


# ---------------------------------------------------------------------------------------------
# Training jobs


@dataclass(frozen=True)
class JobRequest:
    model_type: str
    symbol: str
    timeframe: str
    trigger_reason: str = TriggerReason.MANUAL
    trigger_context: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    seed: int = 0
    window_start: datetime | None = None
    window_end: datetime | None = None
    requested_by: str = ""
    # What to do when the model has an active job: "join" it, or "queue" a job that starts after.
    if_active: str = "join"


IF_ACTIVE_CHOICES = ("join", "queue")


def _recipe_matches(job: TrainingJob, request: JobRequest) -> bool:
    return (
        job.params == (request.params or {})
        and job.seed == request.seed
        and job.window_start == request.window_start
        and job.window_end == request.window_end
    )


def _join(job: TrainingJob, request: JobRequest) -> TrainingJob:
    """Record a trigger on a job it joins instead of piling up duplicate work."""
    job.joined_triggers = [
        *job.joined_triggers,
        {
            "trigger_reason": request.trigger_reason,
            "trigger_context": request.trigger_context or {},
            "requested_by": request.requested_by,
            "at": timezone.now().isoformat(),
        },
    ]
    job.save(update_fields=["joined_triggers"])
    return job


def training_job_create(*, request: JobRequest, dispatch: bool = True) -> tuple[TrainingJob, bool]:
    """Create a job, or join the model's active one. Returns (job, created).

    A model has at most one pending/queued/running job (a database constraint): a second trigger
    records itself on that job instead of piling up duplicate work. With `if_active="queue"` it
    becomes a `waiting` job instead (or joins the waiting job of the same recipe), started when
    the active one ends (`training_job_release_waiting`). The new job is dispatched to the
    pipeline after commit.
    """
    if request.if_active not in IF_ACTIVE_CHOICES:
        raise InvalidInput(
            f"if_active must be one of {', '.join(IF_ACTIVE_CHOICES)}", field="if_active"
        )
    if request.trigger_reason not in TriggerReason.values:
        raise InvalidInput(
            f"unknown trigger reason {request.trigger_reason!r}", field="trigger_reason"
        )
    if request.window_start and request.window_end and request.window_start >= request.window_end:
        raise InvalidInput("window_start must be before window_end", field="window_start")
    model = registered_model_get_or_create(
        model_type=request.model_type, symbol=request.symbol, timeframe=request.timeframe
    )
    with transaction.atomic():
        model = model_lock(model_id=model.model_id)
        active = TrainingJob.objects.filter(model=model, status__in=ACTIVE_JOB_STATUSES).first()
        waits = active is not None and request.if_active == "queue"
        if active is not None and not waits:
            return _join(active, request), False
        if waits:
            same = [
                job
                for job in TrainingJob.objects.filter(model=model, status=JobStatus.WAITING)
                if _recipe_matches(job, request)
            ]
            if same:
                return _join(same[0], request), False
        job = TrainingJob.objects.create(
            model=model,
            model_type=model.model_type,
            symbol=model.symbol,
            timeframe=model.timeframe,
            trigger_reason=request.trigger_reason,
            trigger_context=request.trigger_context or {},
            params=request.params or {},
            seed=request.seed,
            window_start=request.window_start,
            window_end=request.window_end,
            requested_by=request.requested_by,
            status=JobStatus.WAITING if waits else JobStatus.PENDING,
            queued_after=active if waits else None,
        )
        outbox_event_write(
            event_type=EventType.TRAINING_JOB_CREATED,
            model_id=model.model_id,
            payload={
                "job_id": str(job.id),
                "model_type": job.model_type,
                "symbol": job.symbol,
                "timeframe": job.timeframe,
                "trigger_reason": job.trigger_reason,
                "trigger_context": job.trigger_context,
                "status": job.status,
            },
        )
        if dispatch and not waits:
            job_id = job.id
            transaction.on_commit(lambda: training_job_dispatch(job_id=job_id))
        elif waits:
            # The active job may end before this commits; its release would not see this job
            # yet (training_job_release_waiting reads without a lock first), so look again once
            # it is visible.
            model_pk = model.pk
            transaction.on_commit(
                lambda: training_job_release_waiting(model_pk=model_pk, dispatch=dispatch)
            )
    return job, True


def training_job_release_waiting(*, model_pk: Any, dispatch: bool = True) -> TrainingJob | None:
    """Start the model's oldest waiting job once it has no active one (pending, then dispatched
    after commit). Called when a job ends, and by the reaper for anything that slipped by.

    Most models have no waiting job: one unlocked read says so without a transaction. A waiting
    job committed just after that read is released by its creator's own call after its commit
    (training_job_create), so none is left behind."""
    if not TrainingJob.objects.filter(model_id=model_pk, status=JobStatus.WAITING).exists():
        return None
    with transaction.atomic():
        if RegisteredModel.objects.select_for_update().filter(pk=model_pk).first() is None:
            return None
        if TrainingJob.objects.filter(model_id=model_pk, status__in=ACTIVE_JOB_STATUSES).exists():
            return None
        job = (
            TrainingJob.objects.select_for_update()
            .filter(model_id=model_pk, status=JobStatus.WAITING)
            .order_by("created_at")
            .first()
        )
        if job is None:
            return None
        job.status = JobStatus.PENDING
        job.save(update_fields=["status"])
        if dispatch:
            job_id = job.pk
            transaction.on_commit(lambda: training_job_dispatch(job_id=job_id))
    return job


def _job_ended(model_pk: Any) -> None:
    """After the ending job's commit, start the model's next waiting job, if any."""
    transaction.on_commit(lambda: training_job_release_waiting(model_pk=model_pk))


class AttemptLost(Exception):
    """This attempt no longer holds its job: the reaper took it back (its heartbeat went stale)."""


def time_limits_for(model_type: str) -> tuple[int, int]:
    """Soft and hard Celery time limits (seconds) of one family's training work (settings)."""
    limits = settings.CLM_TRAINING_TIME_LIMITS
    soft, hard = limits.get(model_type, limits["other"])
    return soft, hard


def training_queue_for(model_type: str) -> str:
    """The queue a family's training jobs go to: `gpu` for settings.CLM_GPU_FAMILIES (served by
    workers with an accelerator), `training` for every other."""
    if model_type in settings.CLM_GPU_FAMILIES:
        return settings.CLM_GPU_QUEUE
    return settings.CLM_TRAINING_QUEUE


def _enqueue_training_job(*, job_id: str, task_id: str) -> None:
    """Send a job to its family's queue by task name, with its family's time limits: the
    registry knows the task only by the name the training app registers."""
    model_type = TrainingJob.objects.values_list("model_type", flat=True).get(pk=job_id)
    soft, hard = time_limits_for(model_type)
    send_task_by_name(
        TRAINING_TASK,
        args=[job_id],
        task_id=task_id,
        queue=training_queue_for(model_type),
        soft_time_limit=soft,
        time_limit=hard,
    )


def training_job_dispatch(*, job_id: uuid.UUID) -> bool:
    """Hand a pending job to the pipeline task on its family's queue (`training` or `gpu`).

    The task id is recorded before sending, so the worker always finds the row queued. If the
    broker is down (the send gives up within the broker timeouts of settings) the job stays
    pending and the reaper dispatches it again later. Returns False when the broker failed.
    """
    task_id = str(uuid.uuid4())
    updated = TrainingJob.objects.filter(pk=job_id, status=JobStatus.PENDING).update(
        status=JobStatus.QUEUED, celery_task_id=task_id, dispatched_at=timezone.now()
    )
    if not updated:
        return True
    try:
        _enqueue_training_job(job_id=str(job_id), task_id=task_id)
    except Exception as exc:  # broker unreachable: leave it for the reaper, never lose the job
        logger.warning("dispatch of job %s failed, left pending: %s", job_id, exc)
        TrainingJob.objects.filter(pk=job_id, status=JobStatus.QUEUED).update(
            status=JobStatus.PENDING, celery_task_id="", dispatched_at=None
        )
        return False
    return True


def training_job_redispatch(*, job_id: uuid.UUID | str, max_tries: int, count: bool) -> str:
    """Reaper: send a job queued past the dispatch timeout again (its message may be lost).

    A duplicate message is harmless: the claim is a compare-and-set. `count` is False while the
    training queue is busy (a job runs with a fresh heartbeat), where waiting is no sign of a lost
    message; once the job was sent `max_tries` times in vain it is failed with a clear message.
    Returns "redispatched", "failed", "broker_down" or "skipped".
    """
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status != JobStatus.QUEUED:
            return "skipped"
        if count and job.redispatches + 1 >= max_tries:
            waited = (timezone.now() - (job.created_at or timezone.now())).total_seconds()
            queue = "gpu" if job.model_type in settings.CLM_GPU_FAMILIES else "training"
            job.status = JobStatus.FAILED
            job.error_step = "queued"
            job.error_message = (
                f"never picked up by a worker: sent {job.redispatches + 1} times over "
                f"{waited / 60:.0f} min; is a worker consuming the {queue} queue?"
            )
            job.finished_at = timezone.now()
            job.save(update_fields=["status", "error_step", "error_message", "finished_at"])
            logger.error("job %s failed: %s", job.pk, job.error_message)
            _job_ended(job.model_id)
            return "failed"
        task_id = job.celery_task_id or str(uuid.uuid4())
    try:
        _enqueue_training_job(job_id=str(job_id), task_id=task_id)
    except Exception as exc:
        logger.warning("redispatch of job %s failed, still queued: %s", job_id, exc)
        return "broker_down"
    TrainingJob.objects.filter(pk=job_id, status=JobStatus.QUEUED).update(
        celery_task_id=task_id,
        dispatched_at=timezone.now(),
        redispatches=F("redispatches") + (1 if count else 0),
    )
    return "redispatched"


def _progress(value: float) -> float:
    """A job's progress as stored: within [0, 1] (the job_progress_0_1 constraint)."""
    return min(max(value, 0.0), 1.0)


def training_job_claim(
    *, job_id: uuid.UUID | str, step: str = "claimed", progress: float = 0.0
) -> bool:
    """Compare-and-set a queued (or pending) job to in_progress. False: someone else has it.

    `step` is the step the job shows from now on and `progress` how far that puts it: a worker
    that goes straight to its first step enters it in this write rather than in one of its own."""
    now = timezone.now()
    return bool(
        TrainingJob.objects.filter(
            pk=job_id, status__in=[JobStatus.PENDING, JobStatus.QUEUED]
        ).update(
            status=JobStatus.IN_PROGRESS,
            started_at=now,
            heartbeat_at=now,
            step_started_at=now,
            attempts=F("attempts") + 1,
            progress=_progress(progress),
            step=step,
            error_message="",
            error_step="",
        )
    )


def training_job_heartbeat(*, job_id: uuid.UUID | str, attempt: int) -> bool:
    """The worker running `attempt` is alive. False: the job is no longer this attempt's."""
    return bool(
        TrainingJob.objects.filter(
            pk=job_id, status=JobStatus.IN_PROGRESS, attempts=attempt
        ).update(heartbeat_at=timezone.now())
    )


def _job_give_up(job: TrainingJob, what: str) -> None:
    """Fail a locked in-progress job that has used up its attempts."""
    job.status = JobStatus.FAILED
    job.error_step = job.step or "start"
    job.error_message = f"{what}; gave up after {job.attempts} attempts"
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "error_step", "error_message", "finished_at", "version"])
    logger.error("job %s failed: %s", job.pk, job.error_message)
    _job_ended(job.model_id)


def _abandon_attempt(job: TrainingJob, why: str) -> bool:
    """Settle what a lost attempt of a locked job left behind. True: the job is in fact done.

    A version still in `training` is failed (the next attempt registers its own: one job, one
    live version); a version that got its verdict means the attempt died after its real work, so
    the job completes with it instead of training again.
    """
    version = job.version
    if version is None:
        return False
    if version.status == ModelStatus.TRAINING:
        model_version_set_status(
            model_id=job.model.model_id, version=version.version, status=ModelStatus.FAILED,
            actor="reaper", reason=f"attempt {job.attempts} of job {job.pk} lost: {why}",
        )  # fmt: skip
    elif version.latest_evaluation_id is not None:
        job.status = JobStatus.COMPLETED
        job.progress = 1.0
        job.step = "completed"
        job.finished_at = timezone.now()
        job.save(update_fields=["status", "progress", "step", "finished_at"])
        _job_ended(job.model_id)
        return True
    job.version = None
    return False


def _lock_job(job_id: uuid.UUID | str) -> TrainingJob | None:
    """Lock a job and its model in the services' lock order (model, then job)."""
    model_pk = TrainingJob.objects.filter(pk=job_id).values_list("model_id", flat=True).first()
    if model_pk is None:
        return None
    RegisteredModel.objects.select_for_update().filter(pk=model_pk).first()
    return (
        TrainingJob.objects.select_for_update(of=("self",))
        .select_related("model", "version")
        .filter(pk=job_id)
        .first()
    )


def training_job_reclaim(
    *, job_id: uuid.UUID | str, max_attempts: int, heartbeat_timeout: float
) -> bool:
    """Take over a job left in progress by a worker that died (its message was redelivered).

    Returns True when this delivery may run it again. A job whose heartbeat is fresh is held by a
    live worker (a broker may redeliver early): it is left alone, and the reaper takes it back
    if that worker stops. Once `max_attempts` is reached the job is failed cleanly instead.
    """
    with transaction.atomic():
        job = _lock_job(job_id)
        if job is None or job.status != JobStatus.IN_PROGRESS:
            return False
        beat = job.heartbeat_at
        if beat is not None and (timezone.now() - beat).total_seconds() < heartbeat_timeout:
            return False
        why = f"worker lost during step {job.step!r}"
        if _abandon_attempt(job, why):
            return False
        if job.attempts >= max_attempts:
            _job_give_up(job, why)
            return False
        now = timezone.now()
        job.attempts += 1
        job.started_at = job.heartbeat_at = job.step_started_at = now
        job.progress = 0.0
        job.step = "reclaimed"
        job.save(
            update_fields=[
                "attempts", "started_at", "heartbeat_at", "step_started_at", "progress", "step",
                "version",
            ]
        )  # fmt: skip
    return True


def training_job_requeue_stuck(
    *, job_id: uuid.UUID | str, max_attempts: int, why: str | None = None
) -> str:
    """Reaper: take back a job whose worker stopped (stale heartbeat) or that ran past its hard
    limit; requeue it, or fail it after max attempts. Returns what happened."""
    with transaction.atomic():
        job = _lock_job(job_id)
        if job is None or job.status != JobStatus.IN_PROGRESS:
            return "skipped"
        why = why or f"stuck in step {job.step!r} past its time limit"
        if _abandon_attempt(job, why):
            return "completed"
        if job.attempts >= max_attempts:
            _job_give_up(job, why)
            return "failed"
        job.status = JobStatus.PENDING
        job.step = "requeued"
        job.error_message = f"attempt {job.attempts} lost: {why}"
        job.heartbeat_at = job.dispatched_at = job.step_started_at = None
        job.save(
            update_fields=[
                "status", "step", "error_message", "heartbeat_at", "dispatched_at",
                "step_started_at", "version",
            ]
        )  # fmt: skip
        logger.warning("job %s requeued: %s", job.pk, why)
        transaction.on_commit(lambda: training_job_dispatch(job_id=job.pk))
    return "requeued"


def training_job_step_start(*, job_id: uuid.UUID | str, step: str, attempt: int) -> None:
    """The job enters `step` now (what the API, the admin and the metrics show while it runs).

    Raises AttemptLost when the job is no longer this attempt's.
    """
    now = timezone.now()
    updated = TrainingJob.objects.filter(
        pk=job_id, status=JobStatus.IN_PROGRESS, attempts=attempt
    ).update(step=step, step_started_at=now, heartbeat_at=now)
    if not updated:
        raise AttemptLost(f"job {job_id} is no longer held by attempt {attempt}")


def training_job_progress(
    *,
    job_id: uuid.UUID | str,
    step: str,
    progress: float,
    seconds: float | None = None,
    attempt: int | None = None,
) -> None:
    """Record that `step` finished (cumulative progress, its wall time). With `attempt`, raises
    AttemptLost when the job is no longer that attempt's."""
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job_id)
        if attempt is not None and (job.status != JobStatus.IN_PROGRESS or job.attempts != attempt):
            raise AttemptLost(f"job {job_id} is no longer held by attempt {attempt}")
        job.step = step
        job.progress = _progress(progress)
        fields = ["step", "progress"]
        if seconds is not None:
            job.step_durations = {**job.step_durations, step: round(seconds, 4)}
            fields.append("step_durations")
        job.save(update_fields=fields)


def _json_merged(field: str, values: dict[str, Any]) -> Any:
    """The JSON object in `field` with `values` added, computed by the database in the UPDATE:
    jsonb `||` on PostgreSQL, json_patch on SQLite (the embedded default), where `||` would
    concatenate the two texts."""
    patch = Value(values, output_field=models.JSONField())
    if connection.vendor == "postgresql":
        return CombinedExpression(F(field), "||", patch)
    return Func(F(field), patch, function="JSON_PATCH", output_field=models.JSONField())


@dataclass(frozen=True)
class NextStep:
    """A job entering `step`, for a service whose transaction writes the job's row anyway
    (model_version_register): the step that ends with that transaction is recorded in the same
    write instead of one of its own after the commit. `finished` is called just before that write
    and gives the steps it ends with their wall times (the current one's measured up to then);
    `progress` is the cumulative progress they reached."""

    step: str
    progress: float
    finished: Callable[[], dict[str, float]]


def _step_values(*, step: str, progress: float, finished: dict[str, float]) -> dict[str, Any]:
    """The UPDATE values of a job entering `step` once the steps `finished` ended."""
    now = timezone.now()
    return {
        "step": step,
        "step_started_at": now,
        "heartbeat_at": now,
        "progress": _progress(progress),
        "step_durations": _json_merged(
            "step_durations", {name: round(seconds, 4) for name, seconds in finished.items()}
        ),
    }


def training_job_step_next(
    *,
    job_id: uuid.UUID | str,
    finished: dict[str, float],
    progress: float,
    step: str,
    attempt: int,
) -> None:
    """Record that the steps `finished` ended (their wall times; the cumulative progress they
    reached) and that the job enters `step` now: training_job_progress then
    training_job_step_start, in one statement.

    One conditional UPDATE is atomic on its own, so the row never shows a half-recorded step.
    Raises AttemptLost when the job is no longer this attempt's.
    """
    updated = TrainingJob.objects.filter(
        pk=job_id, status=JobStatus.IN_PROGRESS, attempts=attempt
    ).update(**_step_values(step=step, progress=progress, finished=finished))
    if not updated:
        raise AttemptLost(f"job {job_id} is no longer held by attempt {attempt}")


def training_job_complete(
    *,
    job_id: uuid.UUID | str,
    version: ModelVersion | None,
    model_seconds: dict[str, float] | None = None,
    attempt: int | None = None,
) -> None:
    """Mark the job completed; `model_seconds` (fit, predict, and the last step's wall time)
    join the per-step durations.

    One conditional UPDATE, atomic on its own (as training_job_step_next): only an in-progress
    job (of `attempt`, if given) completes. Raises AttemptLost when `attempt` no longer holds it.
    """
    now = timezone.now()
    jobs = TrainingJob.objects.filter(pk=job_id, status=JobStatus.IN_PROGRESS)
    if attempt is not None:
        jobs = jobs.filter(attempts=attempt)
    updated = jobs.update(
        status=JobStatus.COMPLETED,
        progress=1.0,
        step="completed",
        step_started_at=now,
        finished_at=now,
        error_message="",
        version=version,
        step_durations=_json_merged(
            "step_durations", {name: round(s, 4) for name, s in (model_seconds or {}).items()}
        ),
    )
    if not updated:
        if attempt is not None:
            raise AttemptLost(f"job {job_id} is no longer held by attempt {attempt}")
        return
    model_pk = (
        version.model_id
        if version is not None
        else TrainingJob.objects.filter(pk=job_id).values_list("model_id", flat=True).first()
    )
    _job_ended(model_pk)


def training_job_fail(
    *,
    job_id: uuid.UUID | str,
    step: str,
    error: str,
    version: ModelVersion | None = None,
    attempt: int | None = None,
) -> None:
    updates: dict[str, Any] = {
        "status": JobStatus.FAILED,
        "error_step": step,
        "error_message": error[:10_000],
        "finished_at": timezone.now(),
    }
    if version is not None:
        updates["version"] = version
    jobs = TrainingJob.objects.filter(pk=job_id, status__in=ACTIVE_JOB_STATUSES)
    if attempt is not None:
        jobs = jobs.filter(attempts=attempt)
    model_pk = jobs.values_list("model_id", flat=True).first()
    if jobs.update(**updates):
        _job_ended(model_pk)


def training_job_cancel(*, job_id: uuid.UUID | str, actor: str = "") -> Any:
    with transaction.atomic():
        try:
            job = TrainingJob.objects.select_for_update().get(pk=job_id)
        except TrainingJob.DoesNotExist:
            raise NotFound(f"unknown job {job_id}") from None
        if job.status not in (JobStatus.WAITING, JobStatus.PENDING, JobStatus.QUEUED):
            raise DomainError(
                f"job {job.id} is {job.status}; only waiting, pending or queued jobs cancel"
            )
        was_active = job.status != JobStatus.WAITING
        job.status = JobStatus.CANCELLED
        job.finished_at = timezone.now()
        job.error_message = f"cancelled by {actor or 'unknown'}"
        job.save(update_fields=["status", "finished_at", "error_message"])
        if was_active:
            _job_ended(job.model_id)
    return job


# ---------------------------------------------------------------------------------------------
# Versions


def model_version_register(
    *,
    model: RegisteredModel,
    job: Any = None,
    params: dict[str, Any],
    feature_spec: dict[str, Any],
    training_metrics: dict[str, Any],
    manifest: dict[str, Any],
    artifact_path: str = "",
    artifact_sha256: str = "",
    artifact_size: int = 0,
    train_start: datetime | None = None,
    train_end: datetime | None = None,
    actor: str = "pipeline",
    job_attempt: int | None = None,
    next_step: NextStep | None = None,
) -> ModelVersion:
    """Allocate the next version number under the model's row lock and record the version.

    With `job_attempt`, the version is refused (AttemptLost) unless that attempt still holds the
    job: an attempt the reaper took back never adds a second version to its job. The job's row
    is locked (after the model's, in lock order) by the UPDATE that links the version, which
    matches only while the attempt holds it; when it matches nothing the transaction rolls back,
    version number included. With `next_step` that UPDATE, the transaction's last statement,
    also records the job entering its next step.
    """
    with transaction.atomic():
        locked = model_lock(model_id=model.model_id)
        number = locked.next_version
        locked.next_version = number + 1
        locked.save(update_fields=["next_version"])
        version = ModelVersion.objects.create(
            model=locked,
            version=number,
            status=ModelStatus.TRAINING,
            artifact_path=artifact_path,
            artifact_sha256=artifact_sha256,
            artifact_size=artifact_size,
            params=params,
            feature_spec=feature_spec,
            training_metrics=training_metrics,
            manifest=manifest,
            train_start=train_start,
            train_end=train_end,
        )
        _audit(
            version=version, action=LifecycleAction.REGISTER, from_status="", actor=actor, reason=""
        )
        outbox_event_write(
            event_type=EventType.MODEL_TRAINED,
            model_id=locked.model_id,
            payload={
                "version": number,
                "job_id": str(job.pk) if job is not None else None,
                "artifact_sha256": artifact_sha256,
                "training_metrics": training_metrics,
            },
        )
        if job is not None:
            jobs = TrainingJob.objects.filter(pk=job.pk)
            values: dict[str, Any] = {"version": version}
            if job_attempt is not None:
                jobs = jobs.filter(status=JobStatus.IN_PROGRESS, attempts=job_attempt)
            if next_step is not None:
                values.update(
                    _step_values(
                        step=next_step.step,
                        progress=next_step.progress,
                        finished=next_step.finished(),
                    )
                )
            if not jobs.update(**values) and job_attempt is not None:
                raise AttemptLost(f"job {job.pk} is no longer held by attempt {job_attempt}")
    return version


def _get_version_locked(model: RegisteredModel, version: int) -> ModelVersion:
    """Lock the version's row under its (locked) model line, reading only what a status change
    reads and writes (its large JSON fields load on access, if ever)."""
    target = _VERSION_LOCK.first(model_pk=model.pk, version=version)
    if target is None:
        raise NotFound(f"model {model.model_id} has no version {version}")
    target.model = model
    return target


def _versions_locked(
    model: RegisteredModel, version: int
) -> tuple[ModelVersion, ModelVersion | None]:
    """Lock, under the (locked) model line, the version and the line's production version if it
    is another one, in one statement, each with its latest evaluation and what a retired
    version's promotion or rollback is judged on (`was_production`, `passed_gates`): what a
    promotion or rollback changes and answers with."""
    rows = _VERSIONS_LOCK.rows(model_pk=model.pk, version=version)
    for row in rows:
        row.model = model
    target = next((row for row in rows if row.version == version), None)
    if target is None:
        raise NotFound(f"model {model.model_id} has no version {version}")
    live = next((row for row in rows if row.status == ModelStatus.PRODUCTION), None)
    return target, (None if live is target else live)


# The reads of a status change, promotion or rollback, compiled once per process
# (clm_project.compiled).
_VERSION_LOCK = CompiledQuery(
    lambda model_pk, version: (
        ModelVersion.objects.select_for_update(of=("self",))
        .only("id", "model_id", "version", "status", "retired_at")
        .filter(model_id=model_pk, version=version)
    ),
    model_pk=int,
    version=int,
)
_VERSIONS_LOCK = CompiledQuery(
    lambda model_pk, version: (
        ModelVersion.objects.select_for_update(of=("self",))
        .select_related("latest_evaluation")
        .filter(Q(version=version) | Q(status=ModelStatus.PRODUCTION), model_id=model_pk)
        .annotate(
            # Its audit shows a turn in production.
            was_production=Exists(
                LifecycleEvent.objects.filter(
                    version_id=OuterRef("pk"), to_status=ModelStatus.PRODUCTION
                )
            ),
            # Its newest evaluation passed the gates (None: never evaluated).
            passed_gates=Subquery(
                EvaluationResult.objects.filter(version_id=OuterRef("pk"))
                .order_by("-created_at", "-id")
                .values("passed")[:1]
            ),
        )
    ),
    model_pk=int,
    version=int,
)


def _proven(version: ModelVersion) -> bool:
    """Once in production, or its newest evaluation passed (read by _versions_locked)."""
    return bool(version.was_production or version.passed_gates)  # type: ignore[attr-defined]


def _make_production(
    *,
    target: ModelVersion,
    previous: ModelVersion | None,
    action: str,
    actor: str,
    reason: str,
    event: OutboxEvent,
) -> tuple[ModelVersion, ModelVersion | None]:
    """Retire the current production version `previous`, then promote `target`, and write the
    audit rows and the outbox `event`; the caller holds the model lock and both rows' locks
    (_versions_locked).

    The old one is demoted first: the one-production-per-model constraint cannot be deferred.
    """
    now = timezone.now()
    audit = []
    if previous is not None:
        previous.status = ModelStatus.RETIRED
        previous.retired_at = now
        audit.append(
            _audit_row(
                version=previous,
                action=LifecycleAction.RETIRE,
                from_status=ModelStatus.PRODUCTION,
                actor=actor,
                reason=f"replaced by v{target.version} ({action}): {reason}".rstrip(": "),
            )
        )
    from_status = target.status
    target.status = ModelStatus.PRODUCTION
    target.promoted_at = now
    target.retired_at = None
    audit.append(
        _audit_row(
            version=target, action=action, from_status=from_status, actor=actor, reason=reason
        )
    )
    if connection.vendor == "postgresql":
        _production_write(target=target, previous=previous, audit=audit, event=event)
        return target, previous
    if previous is not None:
        previous.save(update_fields=["status", "retired_at"])
    target.save(update_fields=["status", "promoted_at", "retired_at"])
    # One INSERT for both rows, the retirement first (ids in this order: the audit's order).
    LifecycleEvent.objects.bulk_create(audit)
    event.save(force_insert=True)
    return target, previous


def _insert_sql(rows: list[Any]) -> tuple[str, list[Any]]:
    """`INSERT` of unsaved rows of one model, valued as the ORM values them (defaults,
    `auto_now_add`), in this order."""
    meta = rows[0]._meta
    fields = [f for f in meta.concrete_fields if not isinstance(f, models.AutoField)]
    qn = connection.ops.quote_name
    one = f"({', '.join(['%s'] * len(fields))})"
    sql = (
        f"INSERT INTO {qn(meta.db_table)} ({', '.join(qn(f.column) for f in fields)}) "
        f"VALUES {', '.join([one] * len(rows))}"
    )
    params = [f.get_db_prep_save(f.pre_save(row, True), connection) for row in rows for f in fields]
    return sql, params


def _production_write(
    *,
    target: ModelVersion,
    previous: ModelVersion | None,
    audit: list[LifecycleEvent],
    event: OutboxEvent,
) -> None:
    """PostgreSQL: _make_production's writes in one statement. The retirement runs to its end
    before the promotion's row is touched (the promotion's condition counts the retired rows),
    so the old row has left the one-production index when the new row enters it; the audit
    rows go in the audit's order (their ids)."""
    table = connection.ops.quote_name(ModelVersion._meta.db_table)
    audit_sql, audit_params = _insert_sql(audit)
    event_sql, event_params = _insert_sql([event])
    ctes, params = [], []
    if previous is not None:
        ctes.append(
            f"retired AS (UPDATE {table} SET status = %s, retired_at = %s WHERE id = %s "
            "RETURNING id)"
        )
        params += [ModelStatus.RETIRED.value, previous.retired_at, previous.pk]
    after_retired = " AND (SELECT count(*) FROM retired) = 1" if previous is not None else ""
    ctes.append(
        f"promoted AS (UPDATE {table} SET status = %s, promoted_at = %s, retired_at = NULL "
        f"WHERE id = %s{after_retired} RETURNING id)"
    )
    params += [ModelStatus.PRODUCTION.value, target.promoted_at, target.pk]
    ctes += [f"audit AS ({audit_sql})", f"outbox AS ({event_sql})"]
    params += [*audit_params, *event_params]
    # Prepared: the statement comes in two texts (with a retirement or without), planned once
    # per connection instead of on every promotion.
    with prepared_cursor(connection) as cursor:
        cursor.execute(f"WITH {', '.join(ctes)} SELECT count(*) FROM promoted", params)
        (promoted,) = cursor.fetchone()
    if promoted != 1:  # the caller's locks make this impossible; never commit half of it
        raise RuntimeError(f"promotion of version {target.pk} wrote {promoted} rows")


def _promote(
    *, model_id: str, version: int, actor: str, reason: str, again_is_no_change: bool
) -> tuple[ModelVersion, bool]:
    """The promotion, and whether it changed anything.

    The model line's lock is a statement of its own, before the versions are read: a statement
    reads the rows as they were when it began, so a read of the live version in the statement
    that waited for the lock would miss a promotion committed while it waited."""
    with transaction.atomic():
        model = model_lock(model_id=model_id)
        target, live = _versions_locked(model, version)
        if target.status == ModelStatus.PRODUCTION:
            if again_is_no_change:
                return target, False
            raise DomainError(f"{model_id} v{version} is already in production")
        if target.status not in PROMOTABLE:
            raise DomainError(
                f"cannot promote {model_id} v{version}: it is {target.status}; "
                f"only {', '.join(sorted(PROMOTABLE))} versions can be promoted"
            )
        if target.status == ModelStatus.RETIRED and not _proven(target):
            raise DomainError(
                f"cannot promote {model_id} v{version}: retired without having been in "
                "production or passed its gates"
            )
        event = OutboxEvent(
            event_type=EventType.MODEL_PROMOTED,
            model_id=model_id,
            payload={
                "version": target.version,
                "previous_version": live.version if live else None,
                "actor": actor,
                "reason": reason,
                "promoted_by": actor,  # the original name of `actor`
            },
        )
        _make_production(
            target=target,
            previous=live,
            action=LifecycleAction.PROMOTE,
            actor=actor,
            reason=reason,
            event=event,
        )
    return target, True


def model_version_promote(
    *, model_id: str, version: int, actor: str, reason: str = ""
) -> ModelVersion:
    """Make `version` the production version of `model_id`, atomically, with audit and event;
    DomainError if it already is."""
    return _promote(
        model_id=model_id, version=version, actor=actor, reason=reason, again_is_no_change=False
    )[0]


def model_version_promote_idempotent(
    *, model_id: str, version: int, actor: str, reason: str = ""
) -> tuple[ModelVersion, bool]:
    """model_version_promote, safe to retry: promoting the production version again changes
    nothing (False, no writes). An unknown model or version is NotFound as reading the version
    answers it, so that the API answers as it did when it read the version first."""
    try:
        return _promote(
            model_id=model_id, version=version, actor=actor, reason=reason, again_is_no_change=True
        )
    except NotFound:
        raise NotFound(f"model {model_id!r} has no version {version}") from None


def model_version_rollback(
    *,
    model_id: str,
    target_version: int,
    actor: str,
    reason: str = "",
    verify_artifact: bool = True,
) -> ModelVersion:
    """Put an earlier, proven version back in production; the current one is retired."""
    from registry.artifacts import ArtifactError, artifact_verify

    with transaction.atomic():
        model = model_lock(model_id=model_id)
        target, live = _versions_locked(model, target_version)
        if target.status == ModelStatus.PRODUCTION:
            raise DomainError(f"{model_id} v{target_version} is the current production version")
        if target.status in (ModelStatus.FAILED, ModelStatus.TRAINING):
            raise DomainError(
                f"cannot roll back to {model_id} v{target_version}: it is {target.status}"
            )
        if not _proven(target):
            raise DomainError(
                f"cannot roll back to {model_id} v{target_version}: it was never in production "
                "and has not passed its gates"
            )
        if verify_artifact and target.artifact_path:
            try:
                artifact_verify(path=target.artifact_path, sha256=target.artifact_sha256)
            except ArtifactError as exc:
                raise DomainError(
                    f"cannot roll back to {model_id} v{target_version}: "
                    f"artifact unverifiable: {exc}"
                ) from exc
        event = OutboxEvent(
            event_type=EventType.MODEL_ROLLBACK,
            model_id=model_id,
            payload={
                "version": target.version,
                "previous_version": live.version if live else None,
                "actor": actor,
                "reason": reason,
                # The original names of previous_version and actor.
                "from_version": live.version if live else None,
                "rolled_back_by": actor,
            },
        )
        _make_production(
            target=target,
            previous=live,
            action=LifecycleAction.ROLLBACK,
            actor=actor,
            reason=reason,
            event=event,
        )
    return target


_SET_STATUS_ACTIONS = {
    ModelStatus.CANDIDATE: LifecycleAction.CANDIDATE,
    ModelStatus.SHADOW: LifecycleAction.SHADOW,
    ModelStatus.FAILED: LifecycleAction.FAIL,
    ModelStatus.RETIRED: LifecycleAction.RETIRE,
}
_ALLOWED_FROM = {
    ModelStatus.CANDIDATE: {ModelStatus.TRAINING, ModelStatus.SHADOW},
    ModelStatus.SHADOW: {ModelStatus.TRAINING, ModelStatus.CANDIDATE},
    ModelStatus.FAILED: {ModelStatus.TRAINING, ModelStatus.SHADOW, ModelStatus.CANDIDATE},
    ModelStatus.RETIRED: {ModelStatus.SHADOW, ModelStatus.CANDIDATE, ModelStatus.PRODUCTION},
}


def model_version_set_status(
    *, model_id: str, version: int, status: str, actor: str, reason: str = ""
) -> ModelVersion:
    """Move a version to candidate, shadow, failed or retired (promotion has its own service)."""
    if status not in _SET_STATUS_ACTIONS:
        raise InvalidInput(f"cannot set status {status!r} here", field="status")
    with transaction.atomic():
        model = model_lock(model_id=model_id)
        target = _get_version_locked(model, version)
        if target.status not in _ALLOWED_FROM[ModelStatus(status)]:
            raise DomainError(f"cannot move {model_id} v{version} from {target.status} to {status}")
        from_status = target.status
        target.status = status
        fields = ["status"]
        if status == ModelStatus.RETIRED:
            target.retired_at = timezone.now()
            fields.append("retired_at")
        target.save(update_fields=fields)
        _audit(
            version=target,
            action=_SET_STATUS_ACTIONS[ModelStatus(status)],
            from_status=from_status,
            actor=actor,
            reason=reason,
        )
    return target


def model_version_update_notes(
    *,
    version: ModelVersion,
    description: str | None = None,
    notes: str | None = None,
    tags: Iterable[str] | None = None,
) -> ModelVersion:
    """Edit a version's description, notes and tags; its status changes only through services."""
    _notes_save(version, description=description, notes=notes, tags=tags)
    return version


# ---------------------------------------------------------------------------------------------
# Evaluations


def evaluation_record(
    *,
    version: ModelVersion,
    metrics: dict[str, Any],
    window_start: datetime,
    window_end: datetime,
    n_bars: int,
    fee: float,
    periods_per_year: int,
    n_trials: int,
    gates: dict[str, Any],
    passed: bool,
    benchmark_sharpe: float | None = None,
    equity_curve: str = "",
    equity_series: str = "",
    regime_slices: dict[str, Any] | None = None,
) -> EvaluationResult:
    fields = {
        name: metrics[name]
        for name in (
            "sharpe", "sortino", "max_drawdown", "total_return", "cagr", "calmar", "exposure",
            "trades", "win_rate", "profit_factor", "avg_trade_return", "avg_bars_held", "psr",
            "dsr",
        )
    }  # fmt: skip
    with transaction.atomic():
        evaluation = EvaluationResult.objects.create(
            version=version,
            window_start=window_start,
            window_end=window_end,
            n_bars=n_bars,
            fee=fee,
            periods_per_year=periods_per_year,
            n_trials=n_trials,
            profit_factor_infinite=bool(metrics.get("profit_factor_infinite", False)),
            gates=gates,
            passed=passed,
            benchmark_sharpe=benchmark_sharpe,
            equity_curve=equity_curve,
            equity_series=equity_series,
            regime_slices=regime_slices or {},
            **fields,
        )
        ModelVersion.objects.filter(pk=version.pk).update(
            latest_evaluation=evaluation, latest_sharpe=evaluation.sharpe
        )
        outbox_event_write(
            event_type=EventType.MODEL_EVALUATED,
            model_id=version.model.model_id,
            payload={
                "version": version.version,
                "evaluation_id": evaluation.pk,
                "passed": passed,
                "metrics": {**fields, "profit_factor_infinite": evaluation.profit_factor_infinite},
                "gates": gates,
            },
        )
    return evaluation


def equity_curve_png_ensure(*, evaluation: EvaluationResult) -> bytes:
    """The evaluation's equity-curve PNG: the stored one, or drawn now from the points the job
    stored (settings.CLM_EQUITY_CURVE_RENDERER) and kept, so a job never waits for a picture
    nobody looks at and each picture is drawn once. Two first requests at once may both draw it;
    the first path written wins and both pictures are the same."""
    from registry.artifacts import artifact_save, artifact_storage

    if evaluation.equity_curve or not evaluation.equity_series:
        return selectors.equity_curve_png_get(evaluation=evaluation)
    storage = artifact_storage()
    if not storage.exists(evaluation.equity_series):
        raise NotFound(f"evaluation {evaluation.pk} has no stored equity curve")
    with storage.open(evaluation.equity_series, "rb") as handle:
        series = handle.read()
    picture = import_string(settings.CLM_EQUITY_CURVE_RENDERER)(series)
    model_id = evaluation.version.model.model_id
    stored = artifact_save(model_id=f"{model_id}/plots", blob=picture, suffix=".png")
    EvaluationResult.objects.filter(pk=evaluation.pk, equity_curve="").update(
        equity_curve=stored.path
    )
    evaluation.equity_curve = stored.path
    return picture
