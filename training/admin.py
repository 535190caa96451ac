"""Retraining in the admin: retrain policies and symbols' calendars are edited here; trigger
records, monitor results, scheduler scans, the schedule and market data are read-only.
celery-beat's entries are under Periodic tasks (created by `manage.py setup_schedules`)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.http import HttpRequest

from registry.admin import ReadOnlyAdmin
from training.models import (
    Bar,
    DriftReport,
    PerformanceReport,
    RegimeState,
    RetrainPolicy,
    ScheduledModel,
    SchedulerScan,
    Symbol,
    TriggerRecord,
)
from training.retraining.scheduler import schedule_entries, scheduler_status

DRIFT_FIELDS = (
    "auto_train_on_drift", "drift_threshold", "psi_threshold", "ks_alpha", "drift_window_bars",
)  # fmt: skip
PERFORMANCE_FIELDS = ("auto_train_on_performance", "sharpe_threshold", "performance_window_bars")
PRIORITY_FIELDS = (
    "priority_manual", "priority_performance", "priority_drift", "priority_regime",
    "priority_periodic",
)  # fmt: skip


@admin.register(RetrainPolicy)
class RetrainPolicyAdmin(admin.ModelAdmin):
    list_display = (
        "model_type", "enabled", "periodic_interval_hours", "auto_train_on_drift",
        "drift_threshold", "auto_train_on_performance", "sharpe_threshold",
        "auto_train_on_regime_change", "cooldown_hours", "max_retrains_per_day", "updated_at",
    )  # fmt: skip
    list_filter = ("enabled",)
    readonly_fields = ("updated_at",)
    fieldsets = (
        (None, {"fields": ("model_type", "enabled", "periodic_interval_hours", "updated_at")}),
        ("Drift", {"fields": DRIFT_FIELDS}),
        ("Live performance", {"fields": PERFORMANCE_FIELDS}),
        ("Regime", {"fields": ("auto_train_on_regime_change",)}),
        ("Pacing of automatic triggers", {"fields": ("cooldown_hours", "max_retrains_per_day")}),
        ("Priorities (0-9, higher first)", {"fields": PRIORITY_FIELDS}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        # The type is the row's identity; change the other fields instead.
        return (*self.readonly_fields, "model_type") if obj else self.readonly_fields


@admin.register(TriggerRecord)
class TriggerRecordAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at", "event_type", "model_key", "outcome", "code", "source", "priority", "job",
    )  # fmt: skip
    list_filter = ("outcome", "trigger_reason", "source", "code")
    search_fields = ("model_key", "event_id", "reason", "requested_by")
    date_hierarchy = "created_at"
    list_select_related = ("job__model",)


class _MonitorAdmin(ReadOnlyAdmin):
    list_select_related = ("model", "version__model")
    search_fields = ("model__model_id",)
    date_hierarchy = "created_at"

    @admin.display(description="version", ordering="version__version")
    def version_number(self, obj: DriftReport | PerformanceReport) -> int:
        return obj.version.version


@admin.register(DriftReport)
class DriftReportAdmin(_MonitorAdmin):
    list_display = (
        "created_at", "model", "version_number", "status", "drift_score", "threshold", "drifted",
        "n_reference", "n_current", "duration_ms",
    )  # fmt: skip
    list_filter = ("status", "drifted")


@admin.register(PerformanceReport)
class PerformanceReportAdmin(_MonitorAdmin):
    list_display = (
        "created_at", "model", "version_number", "status", "rolling_sharpe", "threshold",
        "degraded", "sharpe", "max_drawdown", "n_bars",
    )  # fmt: skip
    list_filter = ("status", "degraded")


@admin.register(RegimeState)
class RegimeStateAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at", "symbol", "timeframe", "regime", "observed", "previous_regime", "changed",
        "status",
    )  # fmt: skip
    list_filter = ("changed", "status", "timeframe", "trend", "volatility")
    search_fields = ("symbol",)
    date_hierarchy = "created_at"


@admin.register(SchedulerScan)
class SchedulerScanAdmin(ReadOnlyAdmin):
    list_display = (
        "started_at", "duration_ms", "models_checked", "due", "created", "joined", "skipped",
        "deferred",
    )  # fmt: skip
    date_hierarchy = "started_at"


class ScheduleChangeList(ChangeList):
    """Attaches each listed model's schedule entry: one computation per page, not per cell."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        listed = [model.model_id for model in self.result_list]
        entries = {e.model_id: e for e in schedule_entries(model_ids=listed)}
        for model in self.result_list:
            model.schedule = entries.get(model.model_id)


@admin.register(ScheduledModel)
class ScheduledModelAdmin(ReadOnlyAdmin):
    """Next periodic training of each model (get_next_training_times); the page title carries
    the scheduler's status (models due now, last scan)."""

    list_display = (
        "model_id", "model_type", "symbol", "timeframe", "interval", "last_training",
        "next_training", "due",
    )  # fmt: skip
    list_filter = ("model_type", "timeframe")
    search_fields = ("model_id", "symbol")

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return ScheduleChangeList

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        status = scheduler_status()
        last = status["last_scan"]
        scanned = f"last scan {last['started_at']:%Y-%m-%d %H:%M} UTC" if last else "never scanned"
        title = f"Schedule: {status['due_now']} due now, {scanned}"
        return super().changelist_view(request, {**(extra_context or {}), "title": title})

    @admin.display(description="interval (h)")
    def interval(self, obj: ScheduledModel) -> str:
        entry = getattr(obj, "schedule", None)
        return str(entry.interval_hours) if entry and entry.enabled else "off"

    @admin.display(description="last training")
    def last_training(self, obj: ScheduledModel) -> Any:
        entry = getattr(obj, "schedule", None)
        return entry.last_training_at if entry else None

    @admin.display(description="next training")
    def next_training(self, obj: ScheduledModel) -> Any:
        entry = getattr(obj, "schedule", None)
        if entry is None or not entry.enabled:
            return "-"
        return entry.next_training_at or "now (never trained)"

    @admin.display(boolean=True)
    def due(self, obj: ScheduledModel) -> bool:
        entry = getattr(obj, "schedule", None)
        return bool(entry and entry.due)


@admin.register(Symbol)
class SymbolAdmin(admin.ModelAdmin):
    """Each symbol's calendar: what its evaluations annualise with (auto: measured from bars)."""

    list_display = ("symbol", "calendar", "updated_at")
    list_editable = ("calendar",)
    list_filter = ("calendar",)
    search_fields = ("symbol",)


@admin.register(Bar)
class BarAdmin(ReadOnlyAdmin):
    list_display = ("symbol", "timeframe", "timestamp", "open", "high", "low", "close", "volume")
    list_filter = ("timeframe", "symbol")
    search_fields = ("symbol",)
    show_full_result_count = False  # counting millions of bars on every page costs seconds
