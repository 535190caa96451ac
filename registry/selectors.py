"""Reads of the registry. Views, admin and the pipeline read through these."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.utils.module_loading import import_string

from clm_project.exceptions import NotFound
from registry.models import (
    EvaluationResult,
    LifecycleEvent,
    ModelStatus,
    ModelVersion,
    OutboxEvent,
    RegisteredModel,
    TrainingJob,
)


def registered_model_get(*, model_id: str) -> RegisteredModel:
    try:
        return RegisteredModel.objects.get(model_id=model_id)
    except RegisteredModel.DoesNotExist:
        raise NotFound(f"unknown model {model_id!r}") from None


def training_job_get(*, job_id: str | uuid.UUID) -> TrainingJob:
    try:
        return TrainingJob.objects.select_related("model", "version").get(pk=job_id)
    except (TrainingJob.DoesNotExist, ValueError, ValidationError):  # malformed UUIDs are unknown
        raise NotFound(f"unknown job {job_id}") from None


def training_job_list(
    *,
    status: str | None = None,
    model_type: str | None = None,
    symbol: str | None = None,
    model_id: str | None = None,
) -> QuerySet[TrainingJob]:
    qs = TrainingJob.objects.select_related("model", "version__model")
    if model_id:
        qs = qs.filter(model__model_id=model_id)
    if status:
        qs = qs.filter(status=status)
    if model_type:
        qs = qs.filter(model_type=model_type)
    if symbol:
        qs = qs.filter(symbol=symbol.upper())
    return qs.order_by("-created_at")


def with_latest_evaluation(qs: QuerySet[ModelVersion]) -> QuerySet[ModelVersion]:
    """Join each version's model and newest evaluation: one query for the whole page."""
    return qs.select_related("model", "latest_evaluation")


@dataclass(frozen=True)
class ModelQuery:
    """The registry query of the original design."""

    model_id: str | None = None
    model_type: str | None = None
    status: str | None = None
    symbol: str | None = None
    timeframe: str | None = None
    min_sharpe: float | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    ordering: str = "-created_at"
    limit: int | None = None


ORDERINGS = {
    "created_at": "created_at",
    "-created_at": "-created_at",
    "version": "version",
    "-version": "-version",
    "sharpe": "latest_sharpe",
    "-sharpe": "-latest_sharpe",
}


def model_versions_query(query: ModelQuery) -> QuerySet[ModelVersion]:
    qs = ModelVersion.objects.all()
    if query.model_id:
        qs = qs.filter(model__model_id=query.model_id)
    if query.model_type:
        qs = qs.filter(model__model_type=query.model_type)
    if query.status:
        qs = qs.filter(status=query.status)
    if query.symbol:
        qs = qs.filter(model__symbol=query.symbol.upper())
    if query.timeframe:
        qs = qs.filter(model__timeframe=query.timeframe)
    if query.created_after:
        qs = qs.filter(created_at__gte=query.created_after)
    if query.created_before:
        qs = qs.filter(created_at__lt=query.created_before)
    if query.min_sharpe is not None:
        qs = qs.filter(latest_sharpe__gte=query.min_sharpe)
    qs = with_latest_evaluation(qs).order_by(ORDERINGS[query.ordering], "pk")
    if query.limit:
        qs = qs[: query.limit]
    return qs


def model_version_get(*, model_id: str, version: int) -> ModelVersion:
    try:
        return with_latest_evaluation(ModelVersion.objects.all()).get(
            model__model_id=model_id, version=version
        )
    except ModelVersion.DoesNotExist:
        raise NotFound(f"model {model_id!r} has no version {version}") from None


def production_version_get(*, model_id: str) -> ModelVersion:
    version = (
        with_latest_evaluation(ModelVersion.objects.all())
        .filter(model__model_id=model_id, status=ModelStatus.PRODUCTION)
        .first()
    )
    if version is None:
        registered_model_get(model_id=model_id)
        raise NotFound(f"model {model_id!r} has no production version")
    return version


def production_version_at(*, model_id: str, at: datetime) -> ModelVersion | None:
    """Which version was in production at time `at`, from the audit log alone."""
    row = (
        LifecycleEvent.objects.filter(model__model_id=model_id, created_at__lte=at)
        .filter(Q(to_status=ModelStatus.PRODUCTION) | Q(from_status=ModelStatus.PRODUCTION))
        .select_related("version")
        .order_by("-created_at", "-id")
        .first()
    )
    if row is None or row.to_status != ModelStatus.PRODUCTION:
        return None
    return row.version


def evaluation_latest(*, version: ModelVersion) -> EvaluationResult | None:
    return version.evaluations.order_by("-created_at", "-id").first()


def evaluations_list(
    *, model_id: str | None = None, version: int | None = None, passed: bool | None = None
) -> QuerySet[EvaluationResult]:
    qs = EvaluationResult.objects.select_related("version__model")
    if model_id:
        qs = qs.filter(version__model__model_id=model_id)
    if version is not None:
        qs = qs.filter(version__version=version)
    if passed is not None:
        qs = qs.filter(passed=passed)
    return qs.order_by("-created_at", "-id")


def lifecycle_events_list(*, model_id: str, version: int) -> QuerySet[LifecycleEvent]:
    """The audit rows of one version, newest first; NotFound when the version does not exist."""
    if not ModelVersion.objects.filter(model__model_id=model_id, version=version).exists():
        raise NotFound(f"model {model_id!r} has no version {version}")
    return (
        LifecycleEvent.objects.filter(version__model__model_id=model_id, version__version=version)
        .select_related("model", "version")
        .order_by("-created_at", "-id")
    )


def outbox_events_list(
    *, event_type: str | None = None, model_id: str | None = None, published: bool | None = None
) -> QuerySet[OutboxEvent]:
    qs = OutboxEvent.objects.all()
    if event_type:
        qs = qs.filter(event_type=event_type)
    if model_id:
        qs = qs.filter(model_id=model_id)
    if published is not None:
        qs = qs.filter(published_at__isnull=not published)
    return qs.order_by("-created_at", "-id")


# ---------------------------------------------------------------------------------------------
# Pictures


def evaluation_get(*, evaluation_id: int) -> EvaluationResult:
    try:
        return EvaluationResult.objects.select_related("version__model").get(pk=evaluation_id)
    except EvaluationResult.DoesNotExist:
        raise NotFound(f"unknown evaluation {evaluation_id}") from None


def equity_curve_png_get(*, evaluation: EvaluationResult) -> bytes:
    """The equity-curve PNG rendered once, when the evaluation was recorded."""
    from registry.artifacts import artifact_storage

    storage = artifact_storage()
    if not evaluation.equity_curve or not storage.exists(evaluation.equity_curve):
        raise NotFound(f"evaluation {evaluation.pk} has no stored equity curve")
    with storage.open(evaluation.equity_curve, "rb") as handle:
        return handle.read()


def trial_sharpes(
    *, model_id: str, symbol: str, timeframe: str, exclude: Any = None
) -> list[float]:
    """Per-bar Sharpe ratios of every earlier trial a deflated Sharpe ratio on this data must
    count: the registry's evaluations of the model line plus what each source in
    settings.CLM_TRIAL_SOURCES reports (the apps that run trials register one; `exclude` names a
    trial a source leaves out, e.g. the candidate a job repeats)."""
    rows = EvaluationResult.objects.filter(version__model__model_id=model_id).values_list(
        "sharpe", "periods_per_year"
    )
    sharpes = [sharpe / math.sqrt(p) for sharpe, p in rows]
    for path in settings.CLM_TRIAL_SOURCES:
        sharpes += import_string(path)(symbol=symbol, timeframe=timeframe, exclude=exclude)
    return sharpes
