"""Reads of the registry. Views, admin and the pipeline read through these."""

from __future__ import annotations

import math
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import FullResultSet, ValidationError
from django.db.models import Q, QuerySet
from django.db.models.expressions import RawSQL
from django.utils.module_loading import import_string

from clm_project.compiled import CompiledQuery, Rows
from clm_project.exceptions import NotFound
from registry.models import (
    EvaluationResult,
    LifecycleEvent,
    ModelStatus,
    ModelVersion,
    OutboxEvent,
    RegisteredModel,
    TrainingJob,
    VersionsRevision,
)


def registered_model_get(*, model_id: str) -> RegisteredModel:
    model = _MODEL.first(model_id=model_id)
    if model is None:
        raise NotFound(f"unknown model {model_id!r}")
    return model


_MODEL = CompiledQuery(
    lambda model_id: RegisteredModel.objects.filter(model_id=model_id), model_id=str
)  # model_id is unique


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


def _page_queryset(query: ModelQuery, *, limit: int, offset: int) -> QuerySet[ModelVersion]:
    """One page of `model_versions_query(query)` in two steps of one statement: the page's ids
    from the filtered, ordered versions alone, then those rows with their model and evaluation
    joined. The rows before `offset` are skipped by id instead of each being read and joined
    (page 25 of 20: 0.7 ms of PostgreSQL's time instead of 2.4 ms)."""
    ids = model_versions_query(query).values("pk")
    sql, params = ids.query.sql_with_params()
    # The ORM's own SQL, every value in it a parameter, and the page's bounds (which a compiled
    # page shape writes into its text as literals: CompiledQuery's `inline`).
    page = RawSQL(f"{sql} LIMIT %s OFFSET %s", (*params, limit, offset))
    return with_latest_evaluation(ModelVersion.objects.filter(pk__in=page)).order_by(
        ORDERINGS[query.ordering], "pk"
    )


# The ModelQuery fields a compiled page may filter on: exact matches on strings. A query on any
# other field (symbol, which is upper-cased; numbers and times) is built by the ORM per request.
_PAGE_FIELDS = ("model_id", "model_type", "status", "timeframe")
_PAGES: dict[tuple[Any, ...], CompiledQuery[ModelVersion]] = {}


def _page_shape(fields: tuple[str, ...], ordering: str) -> CompiledQuery[ModelVersion]:
    key = (fields, ordering)
    if key not in _PAGES:

        def build(page_limit: int, page_offset: int, **values: Any) -> QuerySet[ModelVersion]:
            query = ModelQuery(**values, ordering=ordering)
            return _page_queryset(query, limit=page_limit, offset=page_offset)

        _PAGES[key] = CompiledQuery(
            build,
            inline=("page_limit", "page_offset"),
            **dict.fromkeys(fields, str),
            page_limit=int,
            page_offset=int,
        )
    return _PAGES[key]


def _compiled_page(query: ModelQuery) -> tuple[CompiledQuery[ModelVersion], dict[str, Any]] | None:
    """The compiled page shape of `query` and its filters' values, or None when its filters
    (or its own `limit`) leave it to the ORM."""
    given = {
        name: value
        for name, value in vars(query).items()
        if value not in (None, "") and name != "ordering"
    }
    if query.limit or not set(given) <= set(_PAGE_FIELDS):
        return None
    fields = tuple(name for name in _PAGE_FIELDS if name in given)
    return _page_shape(fields, query.ordering), given


def model_versions_page(query: ModelQuery, *, offset: int, limit: int) -> list[ModelVersion]:
    """`model_versions_query(query)[offset:offset + limit]`, the SQL compiled once per shape
    (which filters are given, and the ordering) where the filters allow."""
    compiled = _compiled_page(query)
    if compiled is not None:
        shape, given = compiled
        return shape.rows(page_limit=limit, page_offset=offset, **given)
    if query.limit:
        return list(model_versions_query(query)[offset : offset + limit])
    return list(_page_queryset(query, limit=limit, offset=offset))


def model_versions_page_rows(query: ModelQuery, *, offset: int, limit: int) -> Rows | None:
    """The rows of `model_versions_page` unbuilt (clm_project.compiled.Rows), for writing them
    out without instances; None for a query whose shape is not compiled (use the page)."""
    compiled = _compiled_page(query)
    if compiled is None:
        return None
    shape, given = compiled
    return shape.raw_rows(page_limit=limit, page_offset=offset, **given)


# (database alias, count SQL, parameters) -> (revision, count); per process, bounded.
_VERSION_COUNTS: OrderedDict[tuple[Any, ...], tuple[int, int]] = OrderedDict()
_VERSION_COUNTS_KEPT = 512


def model_versions_count(qs: QuerySet[ModelVersion]) -> int:
    """`qs.count()`, exact, without counting again while the versions revision stays the same.

    An unfiltered or status-filtered count scans most of the table (100,000 versions: 5 ms of the
    database's time per page); the revision is one row by primary key. The count is read after
    the revision, so a change committed in between makes it newer, never older, than the
    revision it is kept under. Without the revision row (SQLite; a flushed test database) every
    call counts.
    """
    row = _REVISION.first(using=qs.db)
    if row is None:
        return qs.count()
    revision = row.revision
    # The WHERE clause alone says which rows count (joins only add columns); compiling it is a
    # fraction of compiling the whole page query.
    try:
        where, params = qs.query.get_compiler(using=qs.db).compile(qs.query.where)
    except FullResultSet:  # no filter at all
        where, params = "", []
    key = (qs.db, where, tuple(params))
    cached = _VERSION_COUNTS.get(key)
    if cached is not None and cached[0] == revision:
        _VERSION_COUNTS.move_to_end(key)
        return cached[1]
    count = qs.count()
    _VERSION_COUNTS[key] = (revision, count)
    _VERSION_COUNTS.move_to_end(key)
    while len(_VERSION_COUNTS) > _VERSION_COUNTS_KEPT:
        _VERSION_COUNTS.popitem(last=False)
    return count


_REVISION = CompiledQuery(lambda: VersionsRevision.objects.filter(pk=1))
# The reads every request of a trading service or a promotion makes, compiled once per process.
# (model, version) is unique, and so is a model's production version (one_production_per_model).
_VERSION = CompiledQuery(
    lambda model_id, version: with_latest_evaluation(ModelVersion.objects.all()).filter(
        model__model_id=model_id, version=version
    ),
    model_id=str,
    version=int,
)
_PRODUCTION = CompiledQuery(
    lambda model_id: with_latest_evaluation(ModelVersion.objects.all()).filter(
        model__model_id=model_id, status=ModelStatus.PRODUCTION
    ),
    model_id=str,
)


def model_version_get(*, model_id: str, version: int) -> ModelVersion:
    found = _VERSION.first(model_id=model_id, version=version)
    if found is None:
        raise NotFound(f"model {model_id!r} has no version {version}")
    return found


def model_version_rows(*, model_id: str, version: int) -> Rows | None:
    """`model_version_get`'s row unbuilt (clm_project.compiled.Rows); None when it is not found
    this way (`model_version_get` then answers, with its 404)."""
    rows = _VERSION.raw_rows(limit=1, model_id=model_id, version=version)
    return rows if rows is not None and rows.rows else None


def production_version_get(*, model_id: str) -> ModelVersion:
    version = _PRODUCTION.first(model_id=model_id)
    if version is None:
        registered_model_get(model_id=model_id)
        raise NotFound(f"model {model_id!r} has no production version")
    return version


def production_version_rows(*, model_id: str) -> Rows | None:
    """`production_version_get`'s row unbuilt (clm_project.compiled.Rows); None when it is not
    found this way (`production_version_get` then answers, with its 404)."""
    rows = _PRODUCTION.raw_rows(limit=1, model_id=model_id)
    return rows if rows is not None and rows.rows else None


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
    """The evaluation's stored equity-curve PNG (drawn by services.equity_curve_png_ensure)."""
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


# ---------------------------------------------------------------------------------------------
# A model's page: its production history and versions compared


@dataclass(frozen=True)
class ProductionChange:
    """One change of a model's production version, read from the audit log."""

    at: datetime
    version: ModelVersion
    previous: ModelVersion | None
    action: str
    actor: str
    reason: str


# A promotion retires the old production version a moment before it promotes the new one.
_REPLACED_WITHIN_SECONDS = 5.0


def production_history(*, model_id: str) -> list[ProductionChange]:
    """Every promotion and rollback of `model_id`, newest first, with the version it replaced."""
    rows = (
        LifecycleEvent.objects.filter(model__model_id=model_id)
        .filter(Q(to_status=ModelStatus.PRODUCTION) | Q(from_status=ModelStatus.PRODUCTION))
        .select_related("version__model")
        .order_by("created_at", "id")
    )
    changes: list[ProductionChange] = []
    current: ModelVersion | None = None
    left: tuple[ModelVersion, datetime] | None = None
    for row in rows:
        if row.to_status != ModelStatus.PRODUCTION:
            if current is not None and row.version_id == current.pk:
                left, current = (current, row.created_at), None
            continue
        previous = current
        if previous is None and left is not None:
            replaced = (row.created_at - left[1]).total_seconds() <= _REPLACED_WITHIN_SECONDS
            previous = left[0] if replaced else None
        changes.append(
            ProductionChange(
                at=row.created_at,
                version=row.version,
                previous=previous,
                action=row.action,
                actor=row.actor,
                reason=row.reason,
            )
        )
        current, left = row.version, None
    return changes[::-1]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value} if prefix else {}


@dataclass(frozen=True)
class FieldRow:
    """One (dotted) key of params, feature spec or manifest across the compared versions."""

    key: str
    values: list[Any]
    differs: bool


def field_rows(values: list[dict[str, Any]], *, only_differences: bool = False) -> list[FieldRow]:
    """Each key of the dicts (nested keys dotted) with its value in each; `differs` marks keys
    whose values are not all equal (a missing key counts as a different value)."""
    flat = [_flatten(value or {}) for value in values]
    keys = sorted(set().union(*(f.keys() for f in flat)))
    rows = []
    for key in keys:
        cells = [f.get(key) for f in flat]
        differs = len({repr(c) for c in cells}) > 1
        if differs or not only_differences:
            rows.append(FieldRow(key=key, values=cells, differs=differs))
    return rows


@dataclass(frozen=True)
class VersionComparison:
    """Versions of one model side by side. The common window is the newest compared version's
    evaluation window: the older versions were trained before it, so it is unseen by all."""

    model: RegisteredModel
    versions: list[ModelVersion]
    params: list[FieldRow]
    feature_spec: list[FieldRow]
    manifest: list[FieldRow]
    window: EvaluationResult | None


def versions_compare(*, model_id: str, versions: list[int]) -> VersionComparison:
    """The compared versions (oldest first) with their latest evaluations and differences."""
    model = registered_model_get(model_id=model_id)
    found = {
        v.version: v
        for v in with_latest_evaluation(ModelVersion.objects.filter(model=model)).filter(
            version__in=versions
        )
    }
    missing = sorted(set(versions) - set(found))
    if missing:
        raise NotFound(f"model {model_id!r} has no version {', '.join(map(str, missing))}")
    ordered = [found[n] for n in sorted(set(versions))]
    return VersionComparison(
        model=model,
        versions=ordered,
        params=field_rows([v.params for v in ordered]),
        feature_spec=field_rows([v.feature_spec for v in ordered]),
        manifest=field_rows([v.manifest for v in ordered], only_differences=True),
        window=ordered[-1].latest_evaluation,
    )
