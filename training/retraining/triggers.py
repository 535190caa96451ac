"""Retraining triggers: the handlers behind every door (REST, broker, monitors, the periodic scan).

Every trigger ends in exactly one TriggerRecord per model it concerns: `created` (a new job),
`joined` (the model's active job, which records the trigger in `joined_triggers`), `skipped` (with
a code and a sentence saying why) or `rejected` (malformed, or an unknown model).

An automatic trigger (periodic, drift_detected, performance_degraded, regime_change) is checked
under the model's row lock, so concurrent triggers of one model are decided one at a time:
1. its retrain policy: automatic retraining enabled, the trigger's own switch, its threshold;
2. an active (pending, queued, running) job: join it;
3. the cooldown since the model's last job (any trigger, cancelled jobs aside);
4. the daily budget: jobs of the model in the last 24 hours (a rolling window);
5. otherwise a new job, dispatched to the `training` queue after commit.
Requests (manual, strategy_evolution) skip 1, 3 and 4: a person or the evolution engine asked.

A retrain repeats the model's recipe (params and seed of the job behind its production version, or
else of its latest job) on all bars available now. Each trigger carries a priority from the policy
(0-9, higher first), stored on the record and in the job's trigger_context; the periodic scan queues
due models in priority order.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from clm_project.exceptions import DomainError, InvalidInput
from registry import services
from registry.locks import model_lock
from registry.models import (
    ACTIVE_JOB_STATUSES,
    JobStatus,
    ModelStatus,
    ModelType,
    RegisteredModel,
    TrainingJob,
    TriggerReason,
)
from training.models import RetrainPolicy, TriggerOutcome, TriggerRecord, TriggerSource

logger = logging.getLogger(__name__)

AUTOMATIC = frozenset(
    {
        TriggerReason.PERIODIC,
        TriggerReason.DRIFT_DETECTED,
        TriggerReason.PERFORMANCE_DEGRADED,
        TriggerReason.REGIME_CHANGE,
    }
)
REQUESTS = frozenset({TriggerReason.MANUAL, TriggerReason.STRATEGY_EVOLUTION})

PRIORITY_FIELDS: dict[str, str] = {
    TriggerReason.MANUAL: "priority_manual",
    TriggerReason.STRATEGY_EVOLUTION: "priority_manual",
    TriggerReason.PERFORMANCE_DEGRADED: "priority_performance",
    TriggerReason.DRIFT_DETECTED: "priority_drift",
    TriggerReason.REGIME_CHANGE: "priority_regime",
    TriggerReason.PERIODIC: "priority_periodic",
}
SWITCHES: dict[str, str] = {
    TriggerReason.DRIFT_DETECTED: "auto_train_on_drift",
    TriggerReason.PERFORMANCE_DEGRADED: "auto_train_on_performance",
    TriggerReason.REGIME_CHANGE: "auto_train_on_regime_change",
}
BUDGET_WINDOW = timedelta(hours=24)

Skip = tuple[str, str]  # (code, sentence)


@dataclass(frozen=True)
class Origin:
    """Where a trigger came from: recorded on the TriggerRecord and in the job's context.

    Values are made storable on the way in (see `storable`): they may come from any sender.
    """

    source: str = TriggerSource.INTERNAL
    event_id: str = ""
    requested_by: str = ""
    context: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "event_id", storable(self.event_id)[:64])
        object.__setattr__(self, "requested_by", storable(self.requested_by)[:150])
        object.__setattr__(self, "context", storable(self.context))


MAX_STORED_DEPTH = 32


def storable(value: Any, _depth: int = 0) -> Any:
    """`value` as PostgreSQL can store it in text and jsonb: NUL characters replaced, non-finite
    floats and other types as strings, dict keys as strings, nesting cut at MAX_STORED_DEPTH."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict | list | tuple) and _depth >= MAX_STORED_DEPTH:
        return "(nested too deeply)"
    if isinstance(value, dict):
        return {storable(str(k)): storable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v, _depth + 1) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return storable(str(value))


@dataclass(frozen=True)
class TriggerResult:
    """What one trigger caused for one model. `duplicate`: an event id seen before."""

    record: TriggerRecord
    duplicate: bool = False

    @property
    def outcome(self) -> str:
        return self.record.outcome

    @property
    def job(self) -> TrainingJob | None:
        return self.record.job


# ---------------------------------------------------------------------------------------------
# Policies


def retrain_policy_for(model_type: str) -> RetrainPolicy:
    """The type's policy row, or the original design's defaults when it has none."""
    return RetrainPolicy.objects.filter(model_type=model_type).first() or RetrainPolicy.default_for(
        model_type
    )


def retrain_policy_update(*, model_type: str, **changes: Any) -> RetrainPolicy:
    """Store the type's policy with `changes` applied (validated; the row is created from the
    defaults when the type has none)."""
    with transaction.atomic():
        policy = RetrainPolicy.objects.select_for_update().filter(
            model_type=model_type
        ).first() or RetrainPolicy.default_for(model_type)
        for name, value in changes.items():
            setattr(policy, name, value)
        try:
            policy.full_clean()
        except ValidationError as exc:
            raise InvalidInput(
                "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
            ) from exc
        policy.save()
    return policy


def retrain_policies() -> dict[str, RetrainPolicy]:
    """Every model type's policy (stored or default), in one query."""
    stored = {p.model_type: p for p in RetrainPolicy.objects.all()}
    return {t: stored.get(t) or RetrainPolicy.default_for(t) for t in ModelType.values}


def trigger_priority(policy: RetrainPolicy, reason: str) -> int:
    return int(getattr(policy, PRIORITY_FIELDS[reason]))


# ---------------------------------------------------------------------------------------------
# Handlers


def handle_drift_detected(
    model_id: str, drift_score: float, *, origin: Origin | None = None
) -> TriggerResult:
    """Retrain `model_id` when `drift_score` reaches its policy's drift threshold."""

    def below_threshold(policy: RetrainPolicy) -> Skip | None:
        if drift_score < policy.drift_threshold:
            return "threshold", (
                f"drift score {drift_score:.4g} is below the policy's drift threshold "
                f"{policy.drift_threshold:g}"
            )
        return None

    return _automatic(
        model_key=model_id,
        reason=TriggerReason.DRIFT_DETECTED,
        origin=origin or Origin(),
        payload={"drift_score": drift_score},
        gate=below_threshold,
    )


def handle_performance_degraded(
    model_id: str, sharpe: float, *, origin: Origin | None = None
) -> TriggerResult:
    """Retrain `model_id` when its live Sharpe ratio is below its policy's Sharpe threshold."""

    def not_degraded(policy: RetrainPolicy) -> Skip | None:
        if sharpe >= policy.sharpe_threshold:
            return "threshold", (
                f"Sharpe ratio {sharpe:.4g} is not below the policy's Sharpe threshold "
                f"{policy.sharpe_threshold:g}"
            )
        return None

    return _automatic(
        model_key=model_id,
        reason=TriggerReason.PERFORMANCE_DEGRADED,
        origin=origin or Origin(),
        payload={"sharpe_ratio": sharpe},
        gate=not_degraded,
    )


def handle_regime_change(
    new_regime: str,
    affected_models: Iterable[str] | None = None,
    *,
    symbol: str | None = None,
    timeframe: str | None = None,
    origin: Origin | None = None,
    dispatch: bool = True,
) -> list[TriggerResult]:
    """Retrain the affected models, or every model of `symbol` (and `timeframe`, if given).

    `dispatch=False` leaves new jobs pending for a caller that runs them in-process (the demo).
    """
    origin = origin or Origin()
    payload: dict[str, Any] = {"new_regime": new_regime}
    if affected_models is not None:
        keys = list(dict.fromkeys(affected_models))
        payload["affected_models"] = keys
    else:
        if not symbol:
            raise ValueError("handle_regime_change needs affected_models or a symbol")
        payload["symbol"] = symbol.upper()
        models = RegisteredModel.objects.filter(symbol=symbol.upper())
        if timeframe:
            payload["timeframe"] = timeframe
            models = models.filter(timeframe=timeframe)
        keys = list(models.order_by("model_id").values_list("model_id", flat=True))
    if not keys:
        return [
            _record(
                origin=origin,
                reason=TriggerReason.REGIME_CHANGE,
                outcome=TriggerOutcome.SKIPPED,
                code="no_models",
                text=f"no registered model is affected by the change to {new_regime!r}",
                payload=payload,
            )
        ]
    return [
        _automatic(
            model_key=key,
            reason=TriggerReason.REGIME_CHANGE,
            origin=origin,
            payload=payload,
            dispatch=dispatch,
        )
        for key in keys
    ]


def handle_periodic(model_id: str, *, origin: Origin | None = None) -> TriggerResult:
    """Retrain a model the periodic scan found due (the scan decides what is due)."""
    return _automatic(
        model_key=model_id,
        reason=TriggerReason.PERIODIC,
        origin=origin or Origin(source=TriggerSource.SCHEDULER),
        payload={},
    )


def trigger_training(
    *,
    model_type: str,
    symbol: str,
    timeframe: str,
    trigger_reason: str = TriggerReason.MANUAL,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    window_start: datetime | None = None,
    window_end: datetime | None = None,
    origin: Origin | None = None,
    dispatch: bool = True,
    if_active: str = "join",
) -> TriggerResult:
    """A request for training (manual or strategy_evolution): a new job, or the active one joined
    (`if_active="queue"`: a job that waits for the active one instead).

    The model line is registered if it is new. Policies do not apply to requests; invalid input
    is recorded as rejected rather than raised, as for every other trigger. `dispatch=False`
    leaves a new job pending for a caller that runs it in-process (the shell commands).
    """
    origin = origin or Origin()
    payload = {
        "model_type": model_type,
        "symbol": symbol,
        "timeframe": timeframe,
        "params": params or {},
        "seed": seed,
        "window_start": window_start.isoformat() if window_start else None,
        "window_end": window_end.isoformat() if window_end else None,
    }
    if trigger_reason not in REQUESTS:
        return _record(
            origin=origin,
            reason=trigger_reason if trigger_reason in TriggerReason.values else "",
            outcome=TriggerOutcome.REJECTED,
            code="invalid",
            text=f"trigger_training takes requests ({', '.join(sorted(REQUESTS))}), not "
            f"{trigger_reason!r}; automatic triggers have their own handlers",
            payload=payload,
        )
    try:
        model = services.registered_model_get_or_create(
            model_type=model_type, symbol=symbol, timeframe=timeframe
        )
    except DomainError as exc:
        return _record(
            origin=origin,
            reason=trigger_reason,
            outcome=TriggerOutcome.REJECTED,
            code="invalid",
            text=exc.message,
            payload=payload,
        )
    priority = trigger_priority(retrain_policy_for(model.model_type), trigger_reason)
    request = services.JobRequest(
        model_type=model.model_type,
        symbol=model.symbol,
        timeframe=model.timeframe,
        trigger_reason=trigger_reason,
        trigger_context=_job_context(origin, {}, priority),
        params=params or {},
        seed=seed,
        window_start=window_start,
        window_end=window_end,
        requested_by=origin.requested_by or origin.source,
        if_active=if_active,
    )
    with transaction.atomic():
        try:
            job, created = services.training_job_create(request=request, dispatch=dispatch)
        except DomainError as exc:
            return _record(
                origin=origin,
                reason=trigger_reason,
                model=model,
                outcome=TriggerOutcome.REJECTED,
                code="invalid",
                text=exc.message,
                payload=payload,
            )
        return _job_record(
            origin=origin, reason=trigger_reason, model=model, job=job, created=created,
            priority=priority, payload=payload,
        )  # fmt: skip


def trigger_rejected(
    *, origin: Origin, event_type: str, code: str, text: str, payload: dict[str, Any]
) -> TriggerResult:
    """Record an event that could not be handled at all (malformed, unknown type)."""
    reason = _REASON_OF_EVENT.get(event_type, "")
    return _record(
        origin=origin,
        reason=reason,
        event_type=event_type[:64],
        outcome=TriggerOutcome.REJECTED,
        code=code,
        text=text,
        payload=payload,
    )


def trigger_results_for_event(*, event_id: str) -> list[TriggerResult]:
    """What an event id already caused (a redelivered event is not a new trigger)."""
    if not event_id:
        return []
    records = TriggerRecord.objects.filter(event_id=event_id).select_related("model", "job")
    return [TriggerResult(record=r, duplicate=True) for r in records.order_by("id")]


def trigger_records_list(
    *,
    model_id: str | None = None,
    outcome: str | None = None,
    trigger_reason: str | None = None,
    source: str | None = None,
    code: str | None = None,
) -> QuerySet[TriggerRecord]:
    qs = TriggerRecord.objects.select_related("model", "job__model", "job__version")
    if model_id:
        qs = qs.filter(model_key=model_id)
    if outcome:
        qs = qs.filter(outcome=outcome)
    if trigger_reason:
        qs = qs.filter(trigger_reason=trigger_reason)
    if source:
        qs = qs.filter(source=source)
    if code:
        qs = qs.filter(code=code)
    return qs.order_by("-created_at", "-id")


# ---------------------------------------------------------------------------------------------
# The decision


# Incoming event types and the trigger reason each one is.
_REASON_OF_EVENT: dict[str, str] = {
    "drift_detected": TriggerReason.DRIFT_DETECTED,
    "performance_degraded": TriggerReason.PERFORMANCE_DEGRADED,
    "regime_change": TriggerReason.REGIME_CHANGE,
    "manual_training": TriggerReason.MANUAL,
    "periodic": TriggerReason.PERIODIC,
    "strategy_evolution": TriggerReason.STRATEGY_EVOLUTION,
}
_EVENT_OF_REASON = {reason: event for event, reason in _REASON_OF_EVENT.items()}


def _automatic(
    *,
    model_key: str,
    reason: str,
    origin: Origin,
    payload: dict[str, Any],
    gate: Callable[[RetrainPolicy], Skip | None] | None = None,
    dispatch: bool = True,
) -> TriggerResult:
    model = RegisteredModel.objects.filter(model_id=model_key).first()
    if model is None:
        return _record(
            origin=origin,
            reason=reason,
            model_key=model_key,
            outcome=TriggerOutcome.REJECTED,
            code="unknown_model",
            text=f"unknown model {model_key!r}",
            payload=payload,
        )
    policy = retrain_policy_for(model.model_type)
    priority = trigger_priority(policy, reason)
    with transaction.atomic():
        # Triggers of one model are decided one at a time (services lock the same row again).
        model = model_lock(pk=model.pk)
        skip = _policy_skip(policy, reason, gate)
        if skip is None and not _has_active_job(model):
            skip = _pace_skip(model, policy, timezone.now())
        if skip is not None:
            return _record(
                origin=origin, reason=reason, model=model, outcome=TriggerOutcome.SKIPPED,
                code=skip[0], text=skip[1], priority=priority, payload=payload,
            )  # fmt: skip
        job, created = services.training_job_create(
            request=services.JobRequest(
                model_type=model.model_type,
                symbol=model.symbol,
                timeframe=model.timeframe,
                trigger_reason=reason,
                trigger_context=_job_context(origin, payload, priority),
                requested_by=origin.requested_by or origin.source,
                **_recipe(model),
            ),
            dispatch=dispatch,
        )
        return _job_record(
            origin=origin, reason=reason, model=model, job=job, created=created,
            priority=priority, payload=payload,
        )  # fmt: skip


def _policy_skip(
    policy: RetrainPolicy, reason: str, gate: Callable[[RetrainPolicy], Skip | None] | None
) -> Skip | None:
    if not policy.enabled:
        return "disabled", f"automatic retraining of {policy.model_type} is off in its policy"
    switch = SWITCHES.get(reason)
    if switch and not getattr(policy, switch):
        return "auto_off", f"{switch} is off in the {policy.model_type} retrain policy"
    return gate(policy) if gate else None


def _has_active_job(model: RegisteredModel) -> bool:
    return TrainingJob.objects.filter(model=model, status__in=ACTIVE_JOB_STATUSES).exists()


def _pace_skip(model: RegisteredModel, policy: RetrainPolicy, now: datetime) -> Skip | None:
    """Cooldown since the last job, then the budget of jobs in the last 24 hours."""
    jobs = TrainingJob.objects.filter(model=model).exclude(status=JobStatus.CANCELLED)
    last = jobs.order_by("-created_at").values_list("created_at", flat=True).first()
    cooldown = timedelta(hours=policy.cooldown_hours)
    if last is not None and now - last < cooldown:
        return "cooldown", (
            f"cooldown: the model's last job was created {_hours(now - last)} ago and automatic "
            f"triggers wait {policy.cooldown_hours:g} h between jobs (until "
            f"{last + cooldown:%Y-%m-%d %H:%M} UTC)"
        )
    recent = jobs.filter(created_at__gt=now - BUDGET_WINDOW).count()
    if recent >= policy.max_retrains_per_day:
        return "budget", (
            f"daily budget spent: {recent} jobs in the last 24 h, the {policy.model_type} policy "
            f"allows {policy.max_retrains_per_day}"
        )
    return None


def _recipe(model: RegisteredModel) -> dict[str, Any]:
    """Params and seed of the production version's job, else of the latest job, else defaults."""
    job = (
        TrainingJob.objects.filter(model=model, version__status=ModelStatus.PRODUCTION).first()
        or TrainingJob.objects.filter(model=model).order_by("-created_at").first()
    )
    return {"params": dict(job.params), "seed": job.seed} if job else {}


def _job_context(origin: Origin, payload: dict[str, Any], priority: int) -> dict[str, Any]:
    return {
        **payload,
        **origin.context,
        "source": origin.source,
        "event_id": origin.event_id,
        "priority": priority,
    }


def _job_record(
    *,
    origin: Origin,
    reason: str,
    model: RegisteredModel,
    job: TrainingJob,
    created: bool,
    priority: int,
    payload: dict[str, Any],
) -> TriggerResult:
    if created:
        outcome, text = TriggerOutcome.CREATED, f"queued job {job.pk} (priority {priority})"
    else:
        outcome, text = TriggerOutcome.JOINED, f"joined the model's {job.status} job {job.pk}"
    return _record(
        origin=origin, reason=reason, model=model, outcome=outcome, text=text, priority=priority,
        job=job, payload=payload,
    )  # fmt: skip


def _record(
    *,
    origin: Origin,
    reason: str,
    outcome: str,
    payload: dict[str, Any],
    model: RegisteredModel | None = None,
    model_key: str = "",
    event_type: str = "",
    code: str = "",
    text: str = "",
    priority: int = 0,
    job: TrainingJob | None = None,
) -> TriggerResult:
    record = TriggerRecord.objects.create(
        source=origin.source,
        event_type=storable(event_type or _EVENT_OF_REASON.get(reason, ""))[:64],
        trigger_reason=reason,
        event_id=origin.event_id,
        model=model,
        model_key=storable(model.model_id if model else model_key)[:120],
        outcome=outcome,
        code=code,
        reason=storable(text),
        priority=priority,
        job=job,
        payload=storable(payload),
        requested_by=origin.requested_by,
    )
    level = logging.WARNING if outcome == TriggerOutcome.REJECTED else logging.INFO
    logger.log(
        level,
        "trigger %s for %s: %s %s",
        reason or event_type,
        record.model_key,
        outcome,
        text,
        extra={"model_id": record.model_key or None, "job_id": job.pk if job else None},
    )
    return TriggerResult(record=record)


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f} h"
