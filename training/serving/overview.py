"""One registered model as a resource (what it is, what runs, what rules apply, what comes next),
and versions compared side by side on one common window."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import numpy as np
from django.db import models as db_models
from django.db.models import Count

from clm_project.exceptions import DomainError, InvalidInput, NotFound
from registry import selectors
from registry.models import (
    EvaluationResult,
    ModelStatus,
    ModelVersion,
    RegisteredModel,
    TrainingJob,
)
from training.data.bars import as_datetime, as_datetime64, bars_last, load_bars
from training.evaluation.backtest import BacktestResult, backtest
from training.promotion.policies import evaluation_policy_for
from training.promotion.rollback import rollback_policy_for
from training.promotion.shadow import shadow_policy_for
from training.retraining.scheduler import schedule_entries
from training.retraining.triggers import retrain_policies
from training.serving.inference import ArtifactFormatError
from training.serving.services import model_cache

MAX_COMPARED = 10
_POLICY_SKIP = {"id", "model_type", "created_at", "updated_at"}


def _policy_dict(policy: db_models.Model) -> dict[str, Any]:
    """A policy row (stored or the unsaved default) as its settings."""
    return {
        field.name: getattr(policy, field.attname)
        for field in policy._meta.concrete_fields
        if field.name not in _POLICY_SKIP
    }


def policies_in_force(model_type: str) -> dict[str, Any]:
    """The retrain, promotion, shadow and rollback rules that apply to a model type now."""
    from django.conf import settings

    evaluation = evaluation_policy_for(model_type, auto_promote_default=settings.CLM_AUTO_PROMOTE)
    return {
        "retrain": _policy_dict(retrain_policies()[model_type]),
        "promotion": {
            "gates": dataclasses.asdict(evaluation.gates),
            "auto_promote": evaluation.auto_promote,
            "fee": evaluation.fee,
            "eval_fraction": evaluation.eval_fraction,
            "validation_fraction": evaluation.validation_fraction,
        },
        "shadow": _policy_dict(shadow_policy_for(model_type)),
        "rollback": _policy_dict(rollback_policy_for(model_type)),
    }


@dataclasses.dataclass(frozen=True)
class ModelOverview:
    model: RegisteredModel
    production: ModelVersion | None
    latest: ModelVersion | None
    versions_count: int
    versions_by_status: dict[str, int]
    policies: dict[str, Any]
    last_job: TrainingJob | None
    schedule: dict[str, Any] | None


def model_overview_get(*, model_id: str) -> ModelOverview:
    model = selectors.registered_model_get(model_id=model_id)
    versions = ModelVersion.objects.filter(model=model)
    by_status = dict(versions.values_list("status").annotate(n=Count("id")).order_by())
    entry = next(iter(schedule_entries(model_ids=[model.model_id])), None)
    return ModelOverview(
        model=model,
        production=versions.filter(status=ModelStatus.PRODUCTION).first(),
        latest=versions.order_by("-version").first(),
        versions_count=sum(by_status.values()),
        versions_by_status=by_status,
        policies=policies_in_force(model.model_type),
        last_job=TrainingJob.objects.select_related("model", "version")
        .filter(model=model)
        .order_by("-created_at")
        .first(),
        schedule=dataclasses.asdict(entry) if entry else None,
    )


# ---------------------------------------------------------------------------------------------
# Comparison


VERSIONS_PATTERN = r"^[1-9][0-9]{0,8}(,[1-9][0-9]{0,8}){0,9}$"  # 1 to MAX_COMPARED versions


def parse_versions(text: str) -> list[int]:
    """`3,5` -> [3, 5]: one to MAX_COMPARED positive version numbers (a repeat counts once)."""
    parts = [p.strip() for p in str(text).split(",")]
    if not all(p.isdigit() and 0 < int(p) < 10**9 for p in parts) or len(parts) > MAX_COMPARED:
        raise InvalidInput(
            f"versions must be 1 to {MAX_COMPARED} comma-separated positive integers, e.g. 3,5",
            field="versions",
        )
    return list(dict.fromkeys(int(p) for p in parts))


def differences(values: dict[int, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Keys (dotted for nested objects) whose values differ between versions, per version: the
    registry's comparison rows (the admin's too), keyed by version number."""
    numbers = list(values)
    rows = selectors.field_rows([values[n] for n in numbers], only_differences=True)
    return {
        row.key: {str(n): cell for n, cell in zip(numbers, row.values, strict=True)} for row in rows
    }


@dataclasses.dataclass(frozen=True)
class Comparison:
    model: RegisteredModel
    versions: list[ModelVersion]
    evaluations: dict[int, EvaluationResult | None]
    params_diff: dict[str, dict[str, Any]]
    feature_spec_diff: dict[str, dict[str, Any]]
    manifest_diff: dict[str, dict[str, Any]]
    common_window: dict[str, Any]


def versions_compare(*, model_id: str, versions: list[int]) -> Comparison:
    """Every evaluation figure and gate of each version, what differs in their params, feature
    specs and manifests, and all of them backtested on the latest version's evaluation window
    (same bars, same fee), so the figures compare like with like."""
    model = selectors.registered_model_get(model_id=model_id)
    found = {
        v.version: v
        for v in ModelVersion.objects.select_related("model").filter(
            model=model, version__in=versions
        )
    }
    missing = [n for n in versions if n not in found]
    if missing:
        raise NotFound(f"model {model_id!r} has no version {', '.join(map(str, missing))}")
    ordered = [found[n] for n in sorted(versions)]
    evaluations = {v.version: selectors.evaluation_latest(version=v) for v in ordered}
    return Comparison(
        model=model,
        versions=ordered,
        evaluations=evaluations,
        params_diff=differences({v.version: v.params for v in ordered}),
        feature_spec_diff=differences({v.version: v.feature_spec for v in ordered}),
        manifest_diff=differences({v.version: v.manifest for v in ordered}),
        common_window=_common_window(model, ordered, evaluations),
    )


@dataclasses.dataclass(frozen=True)
class WindowRun:
    """Versions backtested on one evaluation's bars and fee (`reason` says why not, if not)."""

    window: EvaluationResult | None
    reason: str = ""
    timestamps: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0))
    close: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0))
    results: dict[int, BacktestResult] = dataclasses.field(default_factory=dict)
    errors: dict[int, str] = dataclasses.field(default_factory=dict)


def versions_on_window(
    *, model: RegisteredModel, versions: list[ModelVersion], window: EvaluationResult | None
) -> WindowRun:
    """Each version's positions on `window`'s bars (with the history its features need),
    backtested with the window's fee: the API's comparison and the admin's curves."""
    if window is None:
        return WindowRun(window, reason=f"v{versions[-1].version} has not been evaluated")
    loaded: dict[int, Any] = {}
    errors: dict[int, str] = {}
    for version in versions:
        try:
            loaded[version.version] = model_cache.get(version)
        except (DomainError, ArtifactFormatError) as exc:
            errors[version.version] = str(getattr(exc, "message", exc))
    history = max((m.warmup_bars for m in loaded.values()), default=0)
    before = bars_last(
        model.symbol, model.timeframe, history + 1, end=window.window_start - timedelta(seconds=1)
    )
    start = as_datetime(before.timestamp[0]) if len(before) else window.window_start
    bars = load_bars(model.symbol, model.timeframe, start, window.window_end + timedelta(seconds=1))
    rows = np.flatnonzero(bars.timestamp >= as_datetime64(window.window_start))
    if len(rows) < 2:
        return WindowRun(window, reason="the window's bars are no longer stored")
    span = slice(int(rows[0]), len(bars))
    results: dict[int, BacktestResult] = {}
    for version in versions:
        number = version.version
        if number in errors:
            continue
        try:
            positions = loaded[number].positions_window(bars, span)
        except ValueError as exc:
            errors[number] = str(exc)
            continue
        results[number] = backtest(
            bars.close[span], positions, fee=window.fee, periods_per_year=window.periods_per_year
        )
    return WindowRun(window, "", bars.timestamp[span], bars.close[span], results, errors)


def _common_window(
    model: RegisteredModel,
    versions: list[ModelVersion],
    evaluations: dict[int, EvaluationResult | None],
) -> dict[str, Any]:
    later = versions[-1]
    run = versions_on_window(model=model, versions=versions, window=evaluations[later.version])
    if run.reason:
        return {"source_version": later.version, "available": False, "reason": run.reason}
    scores: dict[str, Any] = {}
    for version in versions:
        number = version.version
        if number in run.errors:
            scores[str(number)] = {"error": run.errors[number]}
            continue
        scores[str(number)] = {
            k: v for k, v in run.results[number].as_dict().items() if k not in ("n_trials", "dsr")
        }
    window = run.window
    return {
        "source_version": later.version,
        "available": True,
        "window_start": window.window_start,
        "window_end": window.window_end,
        "n_bars": len(run.timestamps),
        "fee": window.fee,
        "periods_per_year": window.periods_per_year,
        "scores": scores,
    }
