"""Checks a training request must pass before a job exists: a request that cannot train is a 400
when it is made, not a 202 followed by a failed job; one that would silently drop its params by
joining a different active job is a 409."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from clm_project.exceptions import DomainError, InvalidInput
from registry.models import ACTIVE_JOB_STATUSES, TrainingJob
from training.data.features import validate_feature_spec
from training.data.prepare import MIN_BARS
from training.data.selectors import bars_required
from training.models import Bar
from training.trainers import TrainerError, trainer_class

__all__ = ["MIN_BARS", "active_job_conflict", "training_request_check"]


def training_request_check(
    *,
    model_type: str,
    symbol: str,
    timeframe: str,
    params: dict[str, Any],
    seed: int,
    window_start: datetime | None = None,
    window_end: datetime | None = None,
) -> None:
    """Raise InvalidInput naming the field for params the trainer refuses (unknown names, types,
    ranges), a bad feature spec or horizon, and a window with fewer than MIN_BARS stored bars."""
    trainer_params = dict(params)
    features = trainer_params.pop("features", None)
    horizon = trainer_params.pop("horizon", None)
    try:
        validate_feature_spec(features)
        if horizon is not None:
            validate_feature_spec({**(features or {}), "horizon": horizon})
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"params: {exc}", field="params") from exc
    try:
        trainer_class(model_type)(trainer_params, seed=seed)
    except TrainerError as exc:
        raise InvalidInput(str(exc), field="params") from exc
    if not bars_required():
        return
    bars = Bar.objects.filter(symbol=symbol.upper(), timeframe=timeframe)
    if window_start is not None:
        bars = bars.filter(timestamp__gte=window_start)
    if window_end is not None:
        bars = bars.filter(timestamp__lt=window_end)
    count = bars.count()
    if count < MIN_BARS:
        where = "window_start" if window_start or window_end else "symbol"
        raise InvalidInput(
            f"{count} bars of {symbol.upper()} {timeframe} in the window; training needs "
            f"{MIN_BARS}",
            field=where,
        )


def active_job_conflict(
    *, model_id: str, params: dict[str, Any], seed: int, if_active: str = "join"
) -> None:
    """409 when the model's active job trains other params or another seed: joining it would
    drop this request's recipe without a word. `if_active="queue"` never conflicts: the request
    waits for the active job instead."""
    if if_active == "queue":
        return
    active = (
        TrainingJob.objects.filter(model__model_id=model_id, status__in=ACTIVE_JOB_STATUSES)
        .only("id", "params", "seed", "status")
        .first()
    )
    if active is None or (active.params == params and active.seed == seed):
        return
    raise DomainError(
        f"model {model_id} has an active job {active.pk} ({active.status}) with other params or "
        f"seed; wait for it, cancel it, send the same params and seed to join it, or send "
        f"if_active=queue to train after it",
        extra={"active_job": str(active.pk)},
    )
