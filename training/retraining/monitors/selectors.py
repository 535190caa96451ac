"""Reads of monitor results for the API and the admin."""

from __future__ import annotations

from django.db.models import QuerySet

from training.models import DriftReport, PerformanceReport, RegimeState


def drift_reports_list(
    *, model_id: str | None = None, status: str | None = None, flagged: bool | None = None
) -> QuerySet[DriftReport]:
    qs = DriftReport.objects.select_related("model", "version", "trigger")
    if model_id:
        qs = qs.filter(model__model_id=model_id)
    if status:
        qs = qs.filter(status=status)
    if flagged is not None:
        qs = qs.filter(drifted=flagged)
    return qs.order_by("-created_at", "-id")


def performance_reports_list(
    *, model_id: str | None = None, status: str | None = None, flagged: bool | None = None
) -> QuerySet[PerformanceReport]:
    qs = PerformanceReport.objects.select_related("model", "version", "trigger")
    if model_id:
        qs = qs.filter(model__model_id=model_id)
    if status:
        qs = qs.filter(status=status)
    if flagged is not None:
        qs = qs.filter(degraded=flagged)
    return qs.order_by("-created_at", "-id")


def regime_states_list(
    *, symbol: str | None = None, timeframe: str | None = None, changed: bool | None = None
) -> QuerySet[RegimeState]:
    qs = RegimeState.objects.all()
    if symbol:
        qs = qs.filter(symbol=symbol.upper())
    if timeframe:
        qs = qs.filter(timeframe=timeframe)
    if changed is not None:
        qs = qs.filter(changed=changed)
    return qs.order_by("-created_at", "-id")
