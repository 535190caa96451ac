"""Retraining in the admin: retrain policies and symbols' calendars are edited here; trigger
records, monitor results, scheduler scans, the schedule and market data are read-only.
celery-beat's entries are under Periodic tasks (created by `manage.py setup_schedules`).

The registry's pages gain what training owns: a form that trains through the manual trigger, the
model page's retraining panel, and the comparison's versions re-run on one window."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import mark_safe

from registry import display
from registry.admin import ModelVersionAdmin, ReadOnlyAdmin, RegisteredModelAdmin, when
from registry.models import ModelType, RegisteredModel
from registry.selectors import VersionComparison
from training.data.selectors import Market, markets_list
from training.evaluation.backtest import backtest
from training.evaluation.plots import equity_curves_png
from training.models import (
    Bar,
    DriftReport,
    PerformanceReport,
    RegimeState,
    RetrainPolicy,
    ScheduledModel,
    SchedulerScan,
    Symbol,
    TriggerOutcome,
    TriggerRecord,
    TriggerSource,
)
from training.retraining import triggers
from training.retraining.scheduler import schedule_entries, scheduler_status
from training.retraining.triggers import Origin, retrain_policy_for
from training.serving.overview import versions_on_window
from training.trainers import TRAINABLE_TYPES, TrainerError, trainer_class

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

    def get_urls(self) -> list[URLPattern]:
        # /admin/training/train/ would be taken for an app index; it lives under the records.
        train = path("train/", self.admin_site.admin_view(train_view), name="training_train")
        return [train, *super().get_urls()]


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


# ---------------------------------------------------------------------------------------------
# Train from the admin: a form over the same trigger handler as the API's manual trigger


def _param_help() -> list[dict[str, Any]]:
    """Each family's tunable params with default and range, from the trainer's own spec."""
    families = []
    for model_type in TRAINABLE_TYPES:
        spec = getattr(trainer_class(model_type), "param_spec", {})
        params = []
        for name, param in spec.items():
            if param.choices:
                allowed = " | ".join(map(str, param.choices))
            else:
                low = "" if param.low is None else f"{param.low:g}"
                high = "" if param.high is None else f"{param.high:g}"
                allowed = f"{low} to {high}" if low or high else ""
            params.append({"name": name, "default": param.default, "allowed": allowed})
        families.append({"model_type": model_type, "params": params})
    return families


class TrainForm(forms.Form):
    model_type = forms.ChoiceField(
        choices=[(v, label) for v, label in ModelType.choices if v in TRAINABLE_TYPES]
    )
    market = forms.ChoiceField(
        label="Symbol and timeframe", help_text="Markets with stored bars, with their bar counts."
    )
    params = forms.JSONField(
        required=False,
        initial=dict,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60}),
        help_text='A JSON object, e.g. {"n_estimators": 200}; empty: the trainer\'s defaults. '
        "Checked by the trainer before the job is queued.",
    )
    seed = forms.IntegerField(min_value=0, max_value=2**31 - 1, initial=0)

    def __init__(self, *args: Any, markets: list[Market], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        market = self.fields["market"]
        assert isinstance(market, forms.ChoiceField)
        market.choices = [
            (f"{m.symbol}|{m.timeframe}",
             f"{m.symbol} {m.timeframe}: {m.bars:,} bars, {m.first:%Y-%m-%d} to {m.last:%Y-%m-%d}")
            for m in markets
        ]  # fmt: skip

    def clean_params(self) -> dict[str, Any]:
        params = self.cleaned_data.get("params")
        if params in (None, ""):
            return {}
        if not isinstance(params, dict):
            raise forms.ValidationError('Enter a JSON object, e.g. {"max_depth": 4}.')
        return params

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        market = data.get("market")
        if market:
            data["symbol"], data["timeframe"] = market.split("|", 1)
        model_type, params = data.get("model_type"), data.get("params")
        if model_type and params is not None and "seed" in data:
            try:
                trainer_class(model_type)(params, seed=data["seed"])
            except TrainerError as exc:
                self.add_error("params", str(exc))
        return data


def train_view(request: HttpRequest) -> HttpResponse:
    """GET: the form (model type, market and params may be given in the query); POST: the
    manual trigger, recorded as a TriggerRecord like every other, then the job's page."""
    if not request.user.has_perm("registry.request_training"):
        raise PermissionDenied
    markets = markets_list()
    if request.method == "POST":
        form = TrainForm(request.POST, markets=markets)
    else:
        form = TrainForm(initial=request.GET.dict(), markets=markets)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        result = triggers.trigger_training(
            model_type=data["model_type"],
            symbol=data["symbol"],
            timeframe=data["timeframe"],
            params=data["params"],
            seed=data["seed"],
            origin=Origin(
                source=TriggerSource.INTERNAL,
                requested_by=request.user.get_username(),
                context={"door": "admin"},
            ),
        )
        job = result.job
        if result.outcome == TriggerOutcome.REJECTED or job is None:
            form.add_error(None, result.record.reason)
        else:
            text = (
                f"Training job {str(job.pk)[:8]} queued for {job.model.model_id}."
                if result.outcome == TriggerOutcome.CREATED
                else f"{job.model.model_id} already has an active job ({str(job.pk)[:8]}): "
                "this request joined it."
            )
            messages.success(request, text)
            return HttpResponseRedirect(reverse("admin:registry_trainingjob_change", args=[job.pk]))
    context = {
        **admin.site.each_context(request),
        "title": "Train a model",
        "form": form,
        "families": _param_help(),
        "no_markets": not markets,
        "opts": TriggerRecord._meta,
    }
    return TemplateResponse(request, "admin/training/train_form.html", context)


def retraining_section(request: HttpRequest, model: RegisteredModel) -> str:
    """The model's retrain policy, its triggers and the door to train it now."""
    policy = retrain_policy_for(model.model_type)
    parts = [f"periodic every {policy.periodic_interval_hours:g} h" if policy.enabled else "off"]
    if policy.enabled and policy.auto_train_on_drift:
        parts.append(f"on drift over {policy.drift_threshold:g}")
    if policy.enabled and policy.auto_train_on_performance:
        parts.append(f"on rolling Sharpe under {display.ratio(policy.sharpe_threshold)}")
    parts.append(f"cooldown {policy.cooldown_hours:g} h")
    parts.append(f"at most {policy.max_retrains_per_day} a day")
    text = "; ".join(parts)
    triggers_url = reverse("admin:training_triggerrecord_changelist") + f"?q={model.model_id}"
    query = {"model_type": model.model_type, "market": f"{model.symbol}|{model.timeframe}"}
    train_url = f"{reverse('admin:training_train')}?{urlencode(query)}"
    count = TriggerRecord.objects.filter(model=model).count()
    return format_html(
        '<p>Retrain policy: {}.</p><p class="clm-links"><a href="{}">Triggers ({})</a>'
        '<a href="{}" class="button" id="train-link">Train a new version…</a></p>',
        text, triggers_url, count, train_url,
    )  # fmt: skip


RegisteredModelAdmin.sections += [("Retraining", retraining_section)]


# ---------------------------------------------------------------------------------------------
# Comparing versions: all of them re-run on the newest one's evaluation window, by the same
# function as GET /clm/models/{id}/compare (training.serving.overview.versions_on_window)

COMMON_WINDOW_METRICS = ("sharpe", "max_drawdown", "total_return", "win_rate", "trades")


def common_window_panel(request: HttpRequest, comparison: VersionComparison) -> str | None:
    """The compared versions backtested on the same bars: figures and overlaid equity curves."""
    window = comparison.window
    if window is None:
        newest = comparison.versions[-1].version
        return format_html("<h2>Common window</h2><p>v{} has no evaluation yet.</p>", newest)
    run = versions_on_window(model=comparison.model, versions=comparison.versions, window=window)
    if run.reason:
        return format_html("<h2>Common window</h2><p>Not available: {}.</p>", run.reason)
    buy_hold = backtest(
        run.close, np.ones(len(run.close)), fee=0.0,
        periods_per_year=window.periods_per_year,
    )  # fmt: skip
    header = format_html_join(
        "", '<th class="num">v{}</th>', ((v.version,) for v in comparison.versions)
    )
    rows = []
    for name in COMMON_WINDOW_METRICS:
        cells = []
        for version in comparison.versions:
            result = run.results.get(version.version)
            cells.append(display.metric(name, getattr(result, name)) if result else "-")
        rows.append(
            format_html(
                '<tr class="{}"><th>{}</th>{}</tr>',
                "differs" if len(set(cells)) > 1 else "",
                display.metric_label(name),
                format_html_join("", '<td class="num">{}</td>', ((c,) for c in cells)),
            )
        )
    errors = format_html_join(
        "", "<li>v{} could not be re-run: {}</li>", sorted(run.errors.items())
    )
    picture = ""
    if run.results:
        png = equity_curves_png(
            timestamps=run.timestamps,
            curves={f"v{n}": r.equity for n, r in sorted(run.results.items())},
            buy_hold=buy_hold.equity,
            title=f"{comparison.model.model_id} on the evaluation window of "
            f"v{comparison.versions[-1].version} ({len(run.timestamps):,} bars)",
        )
        picture = format_html(
            '<img id="compare-curves" src="data:image/png;base64,{}" width="810" '
            'style="max-width: 100%; height: auto" alt="Equity curves of the compared versions '
            'on one window, drawdowns below">',
            base64.b64encode(png).decode("ascii"),
        )
    return format_html(
        "<h2>On one window: {} to {}, fee {}</h2>"
        '<table class="clm-table clm-side" id="common-window"><thead><tr><th>metric</th>{}</tr>'
        "</thead><tbody>{}</tbody></table><ul>{}</ul>{}",
        when(window.window_start), when(window.window_end), display.percent(window.fee, 3),
        header, mark_safe("".join(rows)), errors, picture,
    )  # fmt: skip


ModelVersionAdmin.compare_panels += [common_window_panel]
