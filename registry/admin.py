"""The registry in the admin: a model-registry UI over the services.

A registered model's page shows its versions, its production history (from the audit log), the
policies in force and links to everything about it; versions are compared side by side; promote
and rollback go through a confirmation page that asks for the reason recorded in the audit. Status
changes only happen through registry.services, so every change has its audit row and event and
the one-production-version invariant holds. People edit descriptions, tags and notes; audit,
outbox, evaluation and job rows are read-only.

Apps above the registry add what they own to these pages without the registry importing them:
`RegisteredModelAdmin.sections` (panels of the model page) and `ModelVersionAdmin.compare_panels`
(panels of the comparison, e.g. the equity curves re-run on the common window).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import Count, Prefetch, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse, reverse_lazy
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString, mark_safe

from clm_project.exceptions import DomainError, NotFound
from registry import display, selectors, services
from registry.models import (
    EvaluationResult,
    JobStatus,
    LifecycleEvent,
    Liveness,
    ModelStatus,
    ModelVersion,
    OutboxEvent,
    RegisteredModel,
    Timeframe,
    TrainingJob,
)

EDITABLE_NOTES = ("description", "tags", "notes")
MAX_COMPARED = 4

admin.site.site_header = "CLM model registry"
admin.site.site_title = "CLM admin"
# "View site": the API and its documentation (a lazy URL: the URLconf is not loaded yet).
admin.site.site_url = reverse_lazy("swagger-ui")  # type: ignore[assignment]


def _all_fields(model: type[models.Model]) -> list[str]:
    return [field.name for field in model._meta.fields]


def when(moment: datetime | None) -> str:
    """A compact local time ("2026-12-01 14:38"): list columns stay narrow."""
    return "-" if moment is None else timezone.localtime(moment).strftime("%Y-%m-%d %H:%M")


def duration(seconds: float) -> str:
    """Elapsed time as people say it: 42 s, 3 min 05 s, 2 h 07 min."""
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def admin_url(name: str, *args: Any, query: dict[str, Any] | None = None) -> str | None:
    """An admin URL, or None when the app that serves it is not installed."""
    try:
        url = reverse(f"admin:{name}", args=args)
    except NoReverseMatch:
        return None
    return f"{url}?{urlencode(query, doseq=True)}" if query else url


def timeframe_filter(field_path: str) -> type[admin.SimpleListFilter]:
    """A list filter naming timeframes as the API does ("1h"), not by their enum names."""

    class TimeframeFilter(admin.SimpleListFilter):
        title = "timeframe"
        parameter_name = "timeframe"

        def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
            return [(value, value) for value in Timeframe.values]

        def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
            if self.value() in Timeframe.values:
                return queryset.filter(**{field_path: self.value()})
            return queryset

    return TimeframeFilter


class ReadOnlyAdmin(admin.ModelAdmin):
    """Viewable, never added, changed or deleted by hand."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class TagsField(forms.CharField):
    """Tags typed as `btc, hourly`, stored as a JSON list of short strings."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, str) and value.startswith("["):
            try:
                value = json.loads(value)
            except ValueError:
                return value
        if isinstance(value, list | tuple):
            return ", ".join(str(tag) for tag in value)
        return value

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]  # tags, not text
        text = super().to_python(value) or ""
        tags: list[str] = []
        for tag in (part.strip() for part in text.split(",")):
            if len(tag) > 50:
                raise forms.ValidationError(f"Tags are at most 50 characters: {tag[:50]}...")
            if tag and tag not in tags:
                tags.append(tag)
        return tags


class NotesForm(forms.ModelForm):
    tags = TagsField(
        required=False,
        help_text="Comma-separated, e.g. btc, hourly.",
        widget=forms.TextInput(attrs={"size": 60}),
    )


def pretty_json(value: Any) -> str:
    if value in (None, {}, []):
        return "-"
    return format_html("<pre class='clm-json'>{}</pre>", json.dumps(value, indent=2, default=str))


OPS = {">=": "≥", "<=": "≤"}


def gates_html(gates: dict[str, Any]) -> str:
    """The gate verdicts of one evaluation as a small table: gate, value, rule, verdict."""
    if not isinstance(gates, dict) or not gates:
        return "-"
    rows = []
    for name, gate in gates.items():
        label, value, op, threshold, passed = display.gate_line(name, gate)
        mark = "?" if passed is None else ("✔" if passed else "✘")
        verdict = "pass" if passed else "fail"
        rows.append((verdict, label, value, OPS.get(op, op), threshold, mark))
    body = format_html_join(
        "",
        '<tr class="gate-{}"><th>{}</th><td>{}</td><td>{} {}</td><td>{}</td></tr>',
        rows,
    )
    return format_html('<table class="clm-gates">{}</table>', body)


def regime_slices_html(slices: dict[str, Any]) -> str:
    """Each regime as `name: bars, return, Sharpe, drawdown, trades`, or `absent`, one per line."""
    if not isinstance(slices, dict) or not slices:
        return "-"
    rows = []
    for name, figures in slices.items():
        if not isinstance(figures, dict) or figures.get("absent"):
            rows.append((name, "absent"))
            continue
        rows.append(
            (
                name,
                f"{display.count(figures.get('bars'))} bars, return "
                f"{display.percent(figures.get('total_return'))}, Sharpe "
                f"{display.ratio(figures.get('sharpe'))}, drawdown "
                f"{display.percent(figures.get('max_drawdown'))}, {figures.get('trades')} trades",
            )
        )
    return format_html_join(mark_safe("<br>"), "{}: {}", rows)


def equity_curve_img(evaluation: EvaluationResult | None, *, width: int = 720) -> str:
    """The evaluation's stored equity-curve PNG, served by EvaluationResultAdmin.equity_curve."""
    if evaluation is None or not (evaluation.equity_curve or evaluation.equity_series):
        return "-"
    url = reverse("admin:registry_evaluationresult_equity", args=[evaluation.pk])
    return format_html(
        '<a href="{}"><img src="{}" width="{}" class="equity-curve" style="max-width: 100%; '
        'height: auto" alt="Equity curve of evaluation {} against buy and hold, drawdown below">'
        "</a>",
        url, url, width, evaluation.pk,
    )  # fmt: skip


# Columns of the versions tables (model page, comparison, confirmation).
VERSION_METRICS = ("sharpe", "max_drawdown", "win_rate", "profit_factor", "trades", "dsr")
SUMMARY_METRICS = (
    "sharpe", "sortino", "max_drawdown", "total_return", "cagr", "calmar", "win_rate",
    "profit_factor", "trades", "avg_trade_return", "avg_bars_held", "exposure", "psr", "dsr",
    "benchmark_sharpe",
)  # fmt: skip


@dataclass(frozen=True)
class MetricRow:
    label: str
    values: list[str]
    differs: bool


def metric_rows(
    evaluations: list[EvaluationResult | None], names: tuple[str, ...] = SUMMARY_METRICS
) -> list[MetricRow]:
    """Each metric of several evaluations, formatted, side by side."""
    rows = []
    for name in names:
        values = [display.evaluation_metric(e, name) for e in evaluations]
        rows.append(MetricRow(display.metric_label(name), values, len(set(values)) > 1))
    return rows


def gate_rows(evaluations: list[EvaluationResult | None]) -> list[MetricRow]:
    """Each gate's verdict in several evaluations ("✔ ≥ 1.00"), side by side, then the overall."""
    names: list[str] = []
    for evaluation in evaluations:
        names += [n for n in (evaluation.gates if evaluation else {}) if n not in names]
    rows = []
    for name in names:
        values = []
        for evaluation in evaluations:
            gate = (evaluation.gates if evaluation else {}).get(name)
            if gate is None:
                values.append("-")
                continue
            _, _, op, threshold, passed = display.gate_line(name, gate)
            values.append(f"{'✔' if passed else '✘'} {OPS.get(op, op)} {threshold}")
        rows.append(MetricRow(f"{display.metric_label(name)} gate", values, len(set(values)) > 1))
    overall = ["-" if e is None else ("passed" if e.passed else "failed") for e in evaluations]
    rows.append(MetricRow("all gates", overall, len(set(overall)) > 1))
    return rows


def regime_rows(evaluations: list[EvaluationResult | None]) -> list[MetricRow]:
    """Each market regime of the evaluation windows: Sharpe and return per version, side by
    side ("absent" when the window had no bar of it)."""
    names: list[str] = []
    for evaluation in evaluations:
        slices = (evaluation.regime_slices if evaluation else None) or {}
        names += [n for n in slices if n not in names]
    rows = []
    for name in names:
        values = []
        for evaluation in evaluations:
            figures = ((evaluation.regime_slices if evaluation else None) or {}).get(name)
            if not isinstance(figures, dict) or figures.get("absent"):
                values.append("absent" if isinstance(figures, dict) else "-")
                continue
            values.append(
                f"Sharpe {display.ratio(figures.get('sharpe'))}, "
                f"return {display.percent(figures.get('total_return'))}, "
                f"{display.count(figures.get('bars'))} bars"
            )
        rows.append(MetricRow(name, values, len(set(values)) > 1))
    return rows


def metrics_table(evaluation: EvaluationResult | None) -> str:
    if evaluation is None:
        return "-"
    cells = format_html_join(
        "",
        "<tr><th>{}</th><td>{}</td></tr>",
        ((row.label, row.values[0]) for row in metric_rows([evaluation])),
    )
    window = format_html(
        "<tr><th>Test window</th><td>{} to {}, {} bars, fee {}</td></tr>",
        when(evaluation.window_start), when(evaluation.window_end),
        display.count(evaluation.n_bars), display.percent(evaluation.fee, 3),
    )  # fmt: skip
    return format_html('<table class="clm-metrics">{}{}</table>', cells, window)


# What each window of a version's split is for (docs/evaluation.md), as the admin shows it.
WINDOW_USES = {
    "train": "fitted on",
    "purge": "unused (labels of train end before validation)",
    "validation": "selection: early stopping, calibration, fitness, shadow pre-check",
    "test_purge": "unused (labels of validation end before test)",
    "test": "evaluation: gates, comparison with production, the figures shown",
}


def windows_table(manifest: dict[str, Any] | None) -> str:
    """The split's windows recorded in a version's manifest, in time order, or "-" for a
    version trained before they were recorded."""
    windows = (manifest or {}).get("windows")
    if not windows:
        return "-"
    rows = format_html_join(
        "",
        "<tr><th>{}</th><td>rows {} to {}</td><td>{} to {}</td><td>{}</td></tr>",
        (
            (name, w["rows"][0], w["rows"][1] - 1, w["first"], w["last"], use)
            for name, use in WINDOW_USES.items()
            if (w := windows.get(name))
        ),
    )
    seen = manifest.get("search_seen_until") if manifest else None
    note = format_html("<p>Tested after the last bar its search saw: {}</p>", seen) if seen else ""
    return format_html('<table class="clm-metrics">{}</table>{}', rows, note)


def _version_link(version: ModelVersion | None) -> str:
    if version is None:
        return "-"
    url = reverse("admin:registry_modelversion_change", args=[version.pk])
    return format_html('<a href="{}">v{}</a>', url, version.version)


# ---------------------------------------------------------------------------------------------
# Registered models


ModelSection = Callable[[HttpRequest, RegisteredModel], SafeString | str | None]


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin):
    form = NotesForm
    list_display = (
        "model_id", "model_type", "symbol", "timeframe_shown", "production_shown",
        "production_sharpe", "versions_count", "created",
    )  # fmt: skip
    list_filter = ("model_type", timeframe_filter("timeframe"))
    search_fields = ("model_id", "symbol", "description", "notes")
    fieldsets = ((None, {"fields": EDITABLE_NOTES}),)
    change_form_template = "admin/registry/registeredmodel/change_form.html"
    # (title, function) pairs other apps append: each returns the HTML of one panel, or None.
    sections: ClassVar[list[tuple[str, ModelSection]]] = []

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super()
            .get_queryset(request)
            .annotate(n_versions=Count("versions", distinct=True))
            .prefetch_related(_production_prefetch())
        )

    @admin.display(description="timeframe", ordering="timeframe")
    def timeframe_shown(self, obj: RegisteredModel) -> str:
        return obj.timeframe

    @admin.display(description="production")
    def production_shown(self, obj: RegisteredModel) -> str:
        return _version_link(_production_of(obj))

    @admin.display(description="Sharpe")
    def production_sharpe(self, obj: RegisteredModel) -> str:
        production = _production_of(obj)
        return display.ratio(production.latest_sharpe if production else None)

    @admin.display(description="versions", ordering="n_versions")
    def versions_count(self, obj: RegisteredModel) -> int:
        return int(getattr(obj, "n_versions", 0))  # annotated by get_queryset

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: RegisteredModel) -> str:
        return when(obj.created_at)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # the registry creates models when their first job is requested

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: RegisteredModel, form: Any, change: bool):
        services.registered_model_update_notes(
            model=obj, **{name: form.cleaned_data[name] for name in EDITABLE_NOTES}
        )

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        model = self.get_object(request, object_id)
        if model is not None:
            extra_context = {**(extra_context or {}), **self.overview(request, model)}
        return super().change_view(request, object_id, form_url, extra_context)

    def overview(self, request: HttpRequest, model: RegisteredModel) -> dict[str, Any]:
        """What the model page shows above its notes."""
        versions = list(selectors.with_latest_evaluation(model.versions.all()).order_by("-version"))
        production = next((v for v in versions if v.status == ModelStatus.PRODUCTION), None)
        rows = [
            {
                "version": v,
                "url": reverse("admin:registry_modelversion_change", args=[v.pk]),
                "metrics": [
                    display.evaluation_metric(v.latest_evaluation, n) for n in VERSION_METRICS
                ],
                "created": when(v.created_at),
                "promoted": when(v.promoted_at),
            }
            for v in versions
        ]
        sections = []
        for title, section in self.sections:
            html = section(request, model)
            if html:
                sections.append({"title": title, "html": html})
        return {
            "clm_model": model,
            "production": production,
            "version_rows": rows,
            "version_columns": [display.metric_label(n) for n in VERSION_METRICS],
            "history": selectors.production_history(model_id=model.model_id),
            "sections": sections,
            "compare_url": reverse("admin:registry_modelversion_compare"),
            "jobs_url": admin_url(
                "registry_trainingjob_changelist", query={"model__id__exact": model.pk}
            ),
            "max_compared": MAX_COMPARED,
        }


def _production_prefetch() -> Prefetch:
    return Prefetch(
        "versions",
        queryset=ModelVersion.objects.filter(status=ModelStatus.PRODUCTION),
        to_attr="production_versions",
    )


def _production_of(model: RegisteredModel) -> ModelVersion | None:
    found = getattr(model, "production_versions", None)
    if found is None:
        found = list(model.versions.filter(status=ModelStatus.PRODUCTION))
    return found[0] if found else None


# ---------------------------------------------------------------------------------------------
# Versions


class EvaluationInline(ReadOnlyInline):
    """Every evaluation of the version; the latest one's gates are in the summary above."""

    model = EvaluationResult
    fields = (
        "created", "passed", "sharpe_", "max_drawdown_", "win_rate_", "profit_factor_",
        "trades", "dsr_", "window",
    )  # fmt: skip
    readonly_fields = fields

    @admin.display(description="created")
    def created(self, obj: EvaluationResult) -> str:
        return when(obj.created_at)

    @admin.display(description="window")
    def window(self, obj: EvaluationResult) -> str:
        return f"{when(obj.window_start)} to {when(obj.window_end)}"


def _metric_column(name: str) -> Callable[[Any, EvaluationResult], str]:
    def column(self: Any, obj: EvaluationResult) -> str:
        return display.evaluation_metric(obj, name)

    return admin.display(description=display.metric_label(name), ordering=name)(column)


for _name in ("sharpe", "max_drawdown", "win_rate", "profit_factor", "dsr"):
    setattr(EvaluationInline, f"{_name}_", _metric_column(_name))


class LifecycleInline(ReadOnlyInline):
    model = LifecycleEvent
    fk_name = "version"
    fields = ("created", "action", "from_status", "to_status", "actor", "reason")
    readonly_fields = fields
    show_change_link = False

    @admin.display(description="when")
    def created(self, obj: LifecycleEvent) -> str:
        return when(obj.created_at)


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text="Recorded in the audit log and the event, with your user name.",
        error_messages={"required": "Say why: the reason is recorded in the audit log."},
    )


@dataclass(frozen=True)
class LifecycleAction:
    service: Callable[..., ModelVersion]
    target: str  # the service's keyword for the version number
    verb: str
    done: str


LIFECYCLE_ACTIONS = {
    "promote": LifecycleAction(
        services.model_version_promote, "version", "Promote", "{version} is now in production."
    ),
    "rollback": LifecycleAction(
        services.model_version_rollback,
        "target_version",
        "Roll back to",
        "Rolled back: {version} is in production.",
    ),
}

ComparePanel = Callable[[HttpRequest, "selectors.VersionComparison"], SafeString | str | None]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    form = NotesForm
    list_display = (
        "__str__", "status_shown", "sharpe_shown", "drawdown_shown", "trades_shown", "created",
        "promoted",
    )  # fmt: skip
    list_filter = ("status", "model__model_type", timeframe_filter("model__timeframe"))
    search_fields = ("model__model_id", "model__symbol", "description", "notes")
    date_hierarchy = "created_at"
    list_select_related = ("model", "latest_evaluation")
    inlines = [EvaluationInline, LifecycleInline]
    actions = ("compare_selected", "promote_selected", "rollback_to_selected")
    change_form_template = "admin/registry/modelversion/change_form.html"
    # Functions other apps append: each returns the HTML of one panel of the comparison, or None.
    compare_panels: ClassVar[list[ComparePanel]] = []

    SUMMARY = (
        "model_link", "version", "status_shown", "created_at", "promoted_at", "retired_at",
        "latest_metrics", "windows_shown", "latest_gates", "latest_regimes",
        "equity_curve_picture",
    )  # fmt: skip
    TRAINING = (
        "params_shown", "feature_spec_shown", "training_metrics_shown", "train_start",
        "train_end", "artifact_path", "artifact_sha256", "artifact_size", "manifest_shown",
    )  # fmt: skip

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        return [
            (None, {"fields": self.SUMMARY}),
            ("Description, tags and notes", {"fields": EDITABLE_NOTES, "classes": ["collapse"]}),
            ("Training and artifact", {"fields": self.TRAINING, "classes": ["collapse"]}),
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [*self.SUMMARY, *self.TRAINING]

    @admin.display(description="model")
    def model_link(self, obj: ModelVersion) -> str:
        url = reverse("admin:registry_registeredmodel_change", args=[obj.model_id])
        return format_html('<a href="{}">{}</a>', url, obj.model.model_id)

    @admin.display(description="status", ordering="status")
    def status_shown(self, obj: ModelVersion) -> str:
        """The status as the API writes it ("production"), marked by colour."""
        return format_html(
            '<span class="clm-status clm-status-{}">{}</span>', obj.status, obj.status
        )

    @admin.display(description="latest evaluation")
    def latest_metrics(self, obj: ModelVersion) -> str:
        return metrics_table(obj.latest_evaluation)

    @admin.display(description="gates")
    def latest_gates(self, obj: ModelVersion) -> str:
        return gates_html(obj.latest_evaluation.gates) if obj.latest_evaluation else "-"

    @admin.display(description="by regime")
    def latest_regimes(self, obj: ModelVersion) -> str:
        evaluation = obj.latest_evaluation
        return regime_slices_html(evaluation.regime_slices) if evaluation else "-"

    @admin.display(description="equity curve")
    def equity_curve_picture(self, obj: ModelVersion) -> str:
        return equity_curve_img(obj.latest_evaluation)

    @admin.display(description="params")
    def params_shown(self, obj: ModelVersion) -> str:
        return pretty_json(obj.params)

    @admin.display(description="feature spec")
    def feature_spec_shown(self, obj: ModelVersion) -> str:
        return pretty_json(obj.feature_spec)

    @admin.display(description="training metrics")
    def training_metrics_shown(self, obj: ModelVersion) -> str:
        return pretty_json(obj.training_metrics)

    @admin.display(description="windows")
    def windows_shown(self, obj: ModelVersion) -> str:
        return windows_table(obj.manifest)

    @admin.display(description="manifest")
    def manifest_shown(self, obj: ModelVersion) -> str:
        return pretty_json(obj.manifest)

    @admin.display(description="Sharpe", ordering="latest_sharpe")
    def sharpe_shown(self, obj: ModelVersion) -> str:
        return display.ratio(obj.latest_sharpe)

    @admin.display(description="Max drawdown", ordering="latest_evaluation__max_drawdown")
    def drawdown_shown(self, obj: ModelVersion) -> str:
        return display.evaluation_metric(obj.latest_evaluation, "max_drawdown")

    @admin.display(description="trades", ordering="latest_evaluation__trades")
    def trades_shown(self, obj: ModelVersion) -> str:
        return display.evaluation_metric(obj.latest_evaluation, "trades")

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: ModelVersion) -> str:
        return when(obj.created_at)

    @admin.display(description="promoted", ordering="promoted_at")
    def promoted(self, obj: ModelVersion) -> str:
        return when(obj.promoted_at)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # versions are registered by the training pipeline

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_promote_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("registry.promote_modelversion")

    def save_model(self, request: HttpRequest, obj: ModelVersion, form: Any, change: bool):
        services.model_version_update_notes(
            version=obj, **{name: form.cleaned_data[name] for name in EDITABLE_NOTES}
        )

    def render_change_form(
        self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any
    ) -> HttpResponse:
        obj = kwargs.get("obj")
        if obj is not None and self.has_promote_permission(request):
            context["lifecycle_links"] = [
                (LIFECYCLE_ACTIONS[name].verb, reverse(f"admin:registry_modelversion_{name}",
                                                       args=[obj.pk]))
                for name in ("promote", "rollback")
            ]  # fmt: skip
        return super().render_change_form(request, context, *args, **kwargs)

    # -- URLs ---------------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("compare/", view(self.compare_view), name="registry_modelversion_compare"),
            path(
                "<int:object_id>/promote/",
                view(self.lifecycle_view),
                {"action": "promote"},
                name="registry_modelversion_promote",
            ),
            path(
                "<int:object_id>/rollback/",
                view(self.lifecycle_view),
                {"action": "rollback"},
                name="registry_modelversion_rollback",
            ),
            *super().get_urls(),
        ]

    # -- Promote and roll back, confirmed with a reason ----------------------------------------

    def lifecycle_view(self, request: HttpRequest, object_id: int, action: str) -> HttpResponse:
        """GET: what would change (production now against the target); POST: do it, with the
        reason given, through the same service the API calls."""
        if not self.has_promote_permission(request):
            raise PermissionDenied
        version = self.get_object(request, str(object_id))
        if version is None:
            raise Http404(f"no version {object_id}")
        spec = LIFECYCLE_ACTIONS[action]
        current = version.model.versions.filter(status=ModelStatus.PRODUCTION).first()
        form = ReasonForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                spec.service(
                    model_id=version.model.model_id,
                    **{spec.target: version.version},
                    actor=request.user.get_username(),
                    reason=form.cleaned_data["reason"],
                )
            except DomainError as exc:
                form.add_error(None, exc.message)
            else:
                self.message_user(request, spec.done.format(version=version), messages.SUCCESS)
                return HttpResponseRedirect(
                    reverse("admin:registry_modelversion_change", args=[version.pk])
                )
        compared = [current, version] if current else [version]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"{spec.verb} {version}?",
            "action": action,
            "verb": spec.verb,
            "target": version,
            "current": current,
            "columns": compared,
            "rows": metric_rows([v.latest_evaluation for v in compared]),
            "gate_rows": gate_rows([v.latest_evaluation for v in compared]),
            "form": form,
        }
        return TemplateResponse(
            request, "admin/registry/modelversion/lifecycle_confirm.html", context
        )

    def _one_version(self, request: HttpRequest, queryset: QuerySet) -> ModelVersion | None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version.", messages.ERROR)
            return None
        return queryset.select_related("model").get()

    def _confirm(self, request: HttpRequest, queryset: QuerySet, action: str) -> Any:
        version = self._one_version(request, queryset)
        if version is None:
            return None
        return HttpResponseRedirect(
            reverse(f"admin:registry_modelversion_{action}", args=[version.pk])
        )

    @admin.action(description="Promote selected version to production…", permissions=["promote"])
    def promote_selected(self, request: HttpRequest, queryset: QuerySet) -> Any:
        return self._confirm(request, queryset, "promote")

    @admin.action(description="Roll back to selected version…", permissions=["promote"])
    def rollback_to_selected(self, request: HttpRequest, queryset: QuerySet) -> Any:
        return self._confirm(request, queryset, "rollback")

    # -- Compare --------------------------------------------------------------------------------

    @admin.action(description=f"Compare selected versions (2 to {MAX_COMPARED})")
    def compare_selected(self, request: HttpRequest, queryset: QuerySet) -> Any:
        chosen = list(queryset.select_related("model"))
        models = {v.model.model_id for v in chosen}
        if len(models) != 1 or not 2 <= len(chosen) <= MAX_COMPARED:
            self.message_user(
                request,
                f"Select 2 to {MAX_COMPARED} versions of one model to compare them.",
                messages.ERROR,
            )
            return None
        numbers = sorted(v.version for v in chosen)
        query = {"model": models.pop(), "versions": ",".join(map(str, numbers))}
        url = admin_url("registry_modelversion_compare", query=query)
        assert url is not None  # the registry's own admin view
        return HttpResponseRedirect(url)

    def compare_view(self, request: HttpRequest) -> HttpResponse:
        """Versions of one model side by side: metrics, gates, params, spec and manifest
        differences, and the panels other apps add (equity curves on the common window)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        model_id = request.GET.get("model", "")
        try:
            numbers = _version_numbers(request.GET.getlist("versions"))
            comparison = selectors.versions_compare(model_id=model_id, versions=numbers)
        except (ValueError, NotFound) as exc:
            self.message_user(request, getattr(exc, "message", str(exc)), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:registry_modelversion_changelist"))
        evaluations = [v.latest_evaluation for v in comparison.versions]
        panels = [html for panel in self.compare_panels if (html := panel(request, comparison))]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Compare {comparison.model.model_id} "
            + ", ".join(f"v{v.version}" for v in comparison.versions),
            "comparison": comparison,
            "columns": comparison.versions,
            "rows": metric_rows(evaluations),
            "gate_rows": gate_rows(evaluations),
            "regime_rows": regime_rows(evaluations),
            "window": comparison.window,
            "window_text": (
                f"{when(comparison.window.window_start)} to {when(comparison.window.window_end)}"
                if comparison.window
                else ""
            ),
            "panels": panels,
            "model_url": reverse(
                "admin:registry_registeredmodel_change", args=[comparison.model.pk]
            ),
        }
        return TemplateResponse(request, "admin/registry/modelversion/compare.html", context)


def _version_numbers(values: list[str]) -> list[int]:
    """`["1,3", "4"]` -> [1, 3, 4]: 2 to MAX_COMPARED distinct version numbers, or ValueError."""
    parts = [p.strip() for value in values for p in value.split(",") if p.strip()]
    if not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError("Versions are positive whole numbers, e.g. versions=1,3.")
    numbers = sorted({int(p) for p in parts})
    if not 2 <= len(numbers) <= MAX_COMPARED:
        raise ValueError(f"Pick 2 to {MAX_COMPARED} versions to compare.")
    return numbers


# ---------------------------------------------------------------------------------------------
# Jobs, evaluations, audit, outbox


@admin.register(TrainingJob)
class TrainingJobAdmin(ReadOnlyAdmin):
    list_display = (
        "short_id", "model", "trigger_reason", "status", "progress_bar", "current_step",
        "elapsed", "heartbeat_age", "requested_by", "created",
    )  # fmt: skip
    list_filter = ("status", "trigger_reason", "model_type", timeframe_filter("timeframe"))
    search_fields = ("id", "model__model_id", "symbol", "requested_by", "celery_task_id")
    date_hierarchy = "created_at"
    list_select_related = ("model",)
    actions = ("cancel_selected",)

    @admin.display(description="job", ordering="id")
    def short_id(self, obj: TrainingJob) -> str:
        return str(obj.id)[:8]

    @admin.display(description="progress", ordering="progress")
    def progress_bar(self, obj: TrainingJob) -> str:
        percent = round(obj.progress * 100)
        return format_html(
            '<progress max="100" value="{}" title="{}%"></progress> {}%', percent, percent, percent
        )

    @admin.display(description="step", ordering="step")
    def current_step(self, obj: TrainingJob) -> str:
        """The step the job is in now and for how long (not the last one it finished)."""
        if obj.status != JobStatus.IN_PROGRESS or obj.step_started_at is None:
            return obj.step
        seconds = (timezone.now() - obj.step_started_at).total_seconds()
        return f"{obj.step} (for {duration(seconds)})"

    @admin.display(description="heartbeat", ordering="heartbeat_at")
    def heartbeat_age(self, obj: TrainingJob) -> str:
        if obj.status != JobStatus.IN_PROGRESS or obj.heartbeat_at is None:
            return "-"
        return f"{(timezone.now() - obj.heartbeat_at).total_seconds():.0f} s ago"

    # On the job's page, fields as people read them; new model fields still appear.
    SHOWN_AS = {
        "progress": ("progress_bar",),
        "step": ("current_step", "elapsed"),
        "timeframe": ("timeframe_shown",),
        "step_durations": ("step_durations_shown",),
    }

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [
            shown for name in _all_fields(TrainingJob) for shown in self.SHOWN_AS.get(name, (name,))
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return self.get_fields(request, obj)

    @admin.display(description="timeframe", ordering="timeframe")
    def timeframe_shown(self, obj: TrainingJob) -> str:
        return obj.timeframe

    @admin.display(description="step durations")
    def step_durations_shown(self, obj: TrainingJob) -> str:
        if not obj.step_durations:
            return "-"
        rows = ((step, f"{seconds:.2f} s") for step, seconds in obj.step_durations.items())
        body = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows)
        return format_html('<table class="clm-metrics">{}</table>', body)

    @admin.display(description="elapsed")
    def elapsed(self, obj: TrainingJob) -> str:
        """Running: time since it started; finished: how long it ran."""
        if obj.started_at is None:
            return "-"
        if obj.status == JobStatus.IN_PROGRESS:
            return f"{duration((timezone.now() - obj.started_at).total_seconds())} so far"
        end = obj.finished_at or obj.started_at
        return duration((end - obj.started_at).total_seconds())

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: TrainingJob) -> str:
        return when(obj.created_at)

    def has_request_training_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("registry.request_training")

    @admin.action(
        description="Cancel selected pending or queued jobs", permissions=["request_training"]
    )
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        for job in queryset:
            try:
                services.training_job_cancel(job_id=job.pk, actor=request.user.get_username())
            except DomainError as exc:
                self.message_user(request, exc.message, messages.WARNING)
            else:
                self.message_user(request, f"Cancelled job {job.pk}.", messages.SUCCESS)


@admin.register(Liveness)
class LivenessAdmin(ReadOnlyAdmin):
    list_display = ("name", "kind", "seen_at", "info")
    list_filter = ("kind",)


@admin.register(EvaluationResult)
class EvaluationResultAdmin(ReadOnlyAdmin):
    list_display = (
        "version", "passed", "sharpe_", "win_rate_", "profit_factor_", "max_drawdown_", "trades",
        "dsr_", "created",
    )  # fmt: skip
    list_filter = (
        "passed", "version__model__model_type", timeframe_filter("version__model__timeframe"),
    )  # fmt: skip
    search_fields = ("version__model__model_id",)
    date_hierarchy = "created_at"
    list_select_related = ("version__model",)
    readonly_fields = ("version", "metrics", "gate_verdicts", "regimes", "equity_curve_picture")
    fields = readonly_fields

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: EvaluationResult) -> str:
        return when(obj.created_at)

    @admin.display(description="metrics")
    def metrics(self, obj: EvaluationResult) -> str:
        return metrics_table(obj)

    @admin.display(description="gate verdicts")
    def gate_verdicts(self, obj: EvaluationResult) -> str:
        return gates_html(obj.gates)

    @admin.display(description="by regime")
    def regimes(self, obj: EvaluationResult) -> str:
        return regime_slices_html(obj.regime_slices)

    @admin.display(description="equity curve")
    def equity_curve_picture(self, obj: EvaluationResult) -> str:
        return equity_curve_img(obj)

    def get_urls(self) -> list[URLPattern]:
        picture = path(
            "<int:evaluation_id>/equity.png",
            self.admin_site.admin_view(self.equity_curve),
            name="registry_evaluationresult_equity",
        )
        return [picture, *super().get_urls()]

    def equity_curve(self, request: HttpRequest, evaluation_id: int) -> HttpResponse:
        """The stored PNG, for staff who may view evaluations."""
        try:
            evaluation = selectors.evaluation_get(evaluation_id=evaluation_id)
            if not self.has_view_permission(request, evaluation):
                raise PermissionDenied
            blob = services.equity_curve_png_ensure(evaluation=evaluation)
        except NotFound as exc:
            raise Http404(exc.message) from exc
        return HttpResponse(blob, content_type="image/png")


for _name in ("sharpe", "win_rate", "profit_factor", "max_drawdown", "dsr"):
    setattr(EvaluationResultAdmin, f"{_name}_", _metric_column(_name))


@admin.register(LifecycleEvent)
class LifecycleEventAdmin(ReadOnlyAdmin):
    list_display = ("created", "version", "action", "from_status", "to_status", "actor", "reason")
    list_filter = ("action", "to_status", "from_status")
    search_fields = ("model__model_id", "actor", "reason")
    date_hierarchy = "created_at"
    list_select_related = ("version__model",)

    @admin.display(description="when", ordering="created_at")
    def created(self, obj: LifecycleEvent) -> str:
        return when(obj.created_at)


class PublishedFilter(admin.SimpleListFilter):
    title = "published"
    parameter_name = "published"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Published"), ("no", "Waiting")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in ("yes", "no"):
            return queryset.filter(published_at__isnull=self.value() == "no")
        return queryset


@admin.register(OutboxEvent)
class OutboxEventAdmin(ReadOnlyAdmin):
    list_display = ("created", "event_type", "model_id", "published", "attempts")
    list_filter = ("event_type", PublishedFilter)
    search_fields = ("model_id", "id", "last_error")
    date_hierarchy = "created_at"

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: OutboxEvent) -> str:
        return when(obj.created_at)

    @admin.display(boolean=True, ordering="published_at")
    def published(self, obj: OutboxEvent) -> bool:
        return obj.published_at is not None
