"""The registry in the admin: people edit descriptions, tags, notes and gate policies here.

Status changes only happen through the promote and rollback actions, which call the services, so
every change has its audit row and event and the one-production-version invariant holds. Audit,
outbox and evaluation rows are read-only; jobs are created through the API or the scheduler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from clm_project.exceptions import DomainError, NotFound
from registry import selectors, services
from registry.models import (
    EvaluationResult,
    Experiment,
    ExperimentArm,
    ExperimentEvaluation,
    LifecycleEvent,
    ModelVersion,
    OutboxEvent,
    PromotionPolicy,
    RealisedReturn,
    RegisteredModel,
    RollbackDecision,
    RollbackPolicy,
    ShadowComparison,
    ShadowObservation,
    ShadowPolicy,
    TrainingJob,
)

EDITABLE_NOTES = ("description", "tags", "notes")


def _all_fields(model: type) -> list[str]:
    return [field.name for field in model._meta.fields]


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


class NotesForm(forms.ModelForm):
    """Tags are a JSON list of short strings."""

    def clean_tags(self) -> list[str]:
        tags = self.cleaned_data.get("tags")
        if tags in (None, ""):
            return []
        if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
            raise forms.ValidationError(
                'Enter a JSON list of non-empty strings, e.g. ["btc", "v3"].'
            )
        return [t.strip() for t in tags]


def gates_html(gates: dict[str, Any]) -> str:
    """Each gate as `name value op threshold ✔/✘`, one per line."""
    if not isinstance(gates, dict) or not gates:
        return "-"
    rows = []
    for name, gate in gates.items():
        if not isinstance(gate, dict):
            rows.append((name, gate, "", "", "?"))
            continue
        value = "∞" if gate.get("infinite") else gate.get("value")
        if isinstance(value, float):
            value = f"{value:.4g}"
        mark = "✔" if gate.get("passed") else "✘"
        rows.append((name, value, gate.get("op", ""), gate.get("threshold", ""), mark))
    return format_html_join(mark_safe("<br>"), "{} {} {} {} {}", rows)


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
                f"{figures.get('bars')} bars, return {figures.get('total_return', 0):+.2%}, "
                f"Sharpe {figures.get('sharpe', 0):.2f}, drawdown "
                f"{figures.get('max_drawdown', 0):.2%}, {figures.get('trades')} trades",
            )
        )
    return format_html_join(mark_safe("<br>"), "{}: {}", rows)


def equity_curve_img(evaluation: EvaluationResult | None, *, width: int = 720) -> str:
    """The evaluation's stored equity-curve PNG, served by EvaluationResultAdmin.equity_curve."""
    if evaluation is None or not evaluation.equity_curve:
        return "-"
    url = reverse("admin:registry_evaluationresult_equity", args=[evaluation.pk])
    return format_html(
        '<a href="{}"><img src="{}" width="{}" class="equity-curve" style="max-width: 100%; '
        'height: auto" alt="Equity curve of evaluation {} against buy and hold, drawdown below">'
        "</a>",
        url, url, width, evaluation.pk,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Registered models and versions


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin):
    form = NotesForm
    list_display = ("model_id", "model_type", "symbol", "timeframe", "next_version", "created_at")
    list_filter = ("model_type", "timeframe")
    search_fields = ("model_id", "symbol", "description", "notes")
    date_hierarchy = "created_at"
    fields = ("model_id", "model_type", "symbol", "timeframe", *EDITABLE_NOTES, "created_at")
    readonly_fields = ("model_id", "model_type", "symbol", "timeframe", "created_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # the registry creates models when their first job is requested

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: RegisteredModel, form: Any, change: bool):
        services.registered_model_update_notes(
            model=obj, **{name: form.cleaned_data[name] for name in EDITABLE_NOTES}
        )


class EvaluationInline(ReadOnlyInline):
    model = EvaluationResult
    fields = (
        "created_at", "passed", "gate_verdicts", "sharpe", "win_rate", "profit_factor",
        "max_drawdown", "trades", "dsr", "window_start", "window_end",
    )  # fmt: skip
    readonly_fields = fields

    @admin.display(description="gates")
    def gate_verdicts(self, obj: EvaluationResult) -> str:
        return gates_html(obj.gates)


class LifecycleInline(ReadOnlyInline):
    model = LifecycleEvent
    fk_name = "version"
    fields = ("created_at", "action", "from_status", "to_status", "actor", "reason")
    readonly_fields = fields
    show_change_link = False


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    form = NotesForm
    list_display = (
        "__str__", "version", "status", "latest_sharpe_display", "created_at", "promoted_at",
        "retired_at",
    )  # fmt: skip
    list_filter = ("status", "model__model_type", "model__timeframe")
    search_fields = ("model__model_id", "model__symbol", "description", "notes")
    date_hierarchy = "created_at"
    list_select_related = ("model",)
    inlines = (EvaluationInline, LifecycleInline)
    actions = ("promote_selected", "rollback_to_selected")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = [name for name in _all_fields(ModelVersion) if name not in EDITABLE_NOTES]
        return ["equity_curve_picture", *fields]

    @admin.display(description="equity curve")
    def equity_curve_picture(self, obj: ModelVersion) -> str:
        return equity_curve_img(obj.latest_evaluation)

    @admin.display(description="latest Sharpe", ordering="latest_sharpe")
    def latest_sharpe_display(self, obj: ModelVersion) -> str:
        return "-" if obj.latest_sharpe is None else f"{obj.latest_sharpe:.3f}"

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

    def _one_version(self, request: HttpRequest, queryset: QuerySet) -> ModelVersion | None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version.", messages.ERROR)
            return None
        return queryset.select_related("model").get()

    def _lifecycle_action(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        service: Callable[..., ModelVersion],
        *,
        target: str,
        reason: str,
        done: str,
    ) -> None:
        """Run a promote or rollback service on the one selected version; refusals are messages."""
        version = self._one_version(request, queryset)
        if version is None:
            return
        try:
            service(
                model_id=version.model.model_id,
                **{target: version.version},
                actor=request.user.get_username(),
                reason=reason,
            )
        except DomainError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return
        self.message_user(request, done.format(version=version), messages.SUCCESS)

    @admin.action(description="Promote selected version to production", permissions=["promote"])
    def promote_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._lifecycle_action(
            request, queryset, services.model_version_promote, target="version",
            reason="promoted in the admin", done="{version} is now in production.",
        )  # fmt: skip

    @admin.action(description="Roll back to selected version", permissions=["promote"])
    def rollback_to_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._lifecycle_action(
            request, queryset, services.model_version_rollback, target="target_version",
            reason="rolled back in the admin", done="Rolled back: {version} is in production.",
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Jobs, evaluations, audit, outbox, policies


@admin.register(TrainingJob)
class TrainingJobAdmin(ReadOnlyAdmin):
    list_display = (
        "short_id", "model", "trigger_reason", "status", "progress_bar", "step", "requested_by",
        "created_at", "finished_at",
    )  # fmt: skip
    list_filter = ("status", "trigger_reason", "model_type", "timeframe")
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


@admin.register(EvaluationResult)
class EvaluationResultAdmin(ReadOnlyAdmin):
    list_display = (
        "version", "passed", "sharpe", "win_rate", "profit_factor", "max_drawdown", "trades",
        "dsr", "created_at",
    )  # fmt: skip
    list_filter = ("passed", "version__model__model_type", "version__model__timeframe")
    search_fields = ("version__model__model_id",)
    date_hierarchy = "created_at"
    list_select_related = ("version__model",)
    readonly_fields = ("gate_verdicts", "regimes", "equity_curve_picture")

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
            blob = selectors.equity_curve_png_get(evaluation=evaluation)
        except NotFound as exc:
            raise Http404(exc.message) from exc
        return HttpResponse(blob, content_type="image/png")


@admin.register(LifecycleEvent)
class LifecycleEventAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "version",
        "action",
        "from_status",
        "to_status",
        "actor",
        "reason",
    )
    list_filter = ("action", "to_status", "from_status")
    search_fields = ("model__model_id", "actor", "reason")
    date_hierarchy = "created_at"
    list_select_related = ("version__model",)


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
    list_display = ("created_at", "event_type", "model_id", "published", "attempts")
    list_filter = ("event_type", PublishedFilter)
    search_fields = ("model_id", "id", "last_error")
    date_hierarchy = "created_at"

    @admin.display(boolean=True, ordering="published_at")
    def published(self, obj: OutboxEvent) -> bool:
        return obj.published_at is not None


class PromotionPolicyForm(forms.ModelForm):
    """Field-level messages for the ranges the database also enforces."""

    class Meta:
        model = PromotionPolicy
        fields = (
            "model_type", "min_sharpe", "min_win_rate", "min_profit_factor", "max_drawdown",
            "min_trades", "min_dsr", "regime_min_bars", "regime_max_loss", "auto_promote", "fee",
            "eval_fraction",
        )  # fmt: skip

    def clean_regime_max_loss(self) -> float | None:
        value = self.cleaned_data["regime_max_loss"]
        if value is not None and not 0.0 <= value <= 1.0:
            raise forms.ValidationError("A regime's loss is a fraction in [0, 1]: 0.05 is 5 %.")
        return value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        bars, loss = cleaned.get("regime_min_bars"), cleaned.get("regime_max_loss")
        if (bars is None) != (loss is None) and not self.errors:
            raise forms.ValidationError(
                "The regime gate needs both its minimum bars and its maximum loss (or neither)."
            )
        return cleaned

    def clean_max_drawdown(self) -> float:
        value = self.cleaned_data["max_drawdown"]
        if not 0.0 < value <= 1.0:
            raise forms.ValidationError("Max drawdown is a fraction in (0, 1]: 0.15 is 15 %.")
        return value

    def clean_eval_fraction(self) -> float:
        value = self.cleaned_data["eval_fraction"]
        if not 0.0 < value < 1.0:
            raise forms.ValidationError("The evaluation share of the bars must be in (0, 1).")
        return value

    def clean_fee(self) -> float:
        value = self.cleaned_data["fee"]
        if value < 0.0:
            raise forms.ValidationError("The fee cannot be negative.")
        return value

    def clean_min_win_rate(self) -> float:
        value = self.cleaned_data["min_win_rate"]
        if not 0.0 <= value <= 1.0:
            raise forms.ValidationError("A win rate is a fraction in [0, 1].")
        return value

    def clean_min_dsr(self) -> float | None:
        value = self.cleaned_data["min_dsr"]
        if value is not None and not 0.0 <= value <= 1.0:
            raise forms.ValidationError("The deflated Sharpe ratio is a probability in [0, 1].")
        return value


@admin.register(PromotionPolicy)
class PromotionPolicyAdmin(admin.ModelAdmin):
    form = PromotionPolicyForm
    list_display = (
        "model_type", "min_sharpe", "min_win_rate", "min_profit_factor", "max_drawdown",
        "min_trades", "min_dsr", "auto_promote", "fee", "eval_fraction", "updated_at",
    )  # fmt: skip
    list_filter = ("auto_promote",)
    search_fields = ("model_type",)


# ---------------------------------------------------------------------------------------------
# Shadow testing, A/B experiments and automatic rollback (training.shadow, training.experiments,
# training.rollback). Policies are edited here; comparisons, experiments and decisions are read
# here, and stopped through the services.


def _stat(value: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if value is None else fmt.format(value)


@admin.register(ShadowPolicy)
class ShadowPolicyAdmin(admin.ModelAdmin):
    list_display = (
        "model_type", "mode", "clear_margin", "min_bars", "min_trades", "max_bars", "looks",
        "alpha", "spending", "auto_promote", "updated_at",
    )  # fmt: skip
    list_filter = ("mode", "spending", "auto_promote")


@admin.register(RollbackPolicy)
class RollbackPolicyAdmin(admin.ModelAdmin):
    list_display = (
        "model_type", "enabled", "max_drawdown", "min_rolling_sharpe", "window_bars",
        "cooldown_hours", "updated_at",
    )  # fmt: skip
    list_filter = ("enabled",)


class ShadowObservationInline(ReadOnlyInline):
    model = ShadowObservation
    fields = (
        "created_at", "n_new", "n_bars", "look", "tested_bars", "statistic", "boundary",
        "p_value", "ci_low", "ci_high", "shadow_trades", "decision", "reason",
    )  # fmt: skip
    readonly_fields = fields
    show_change_link = False


class StopSelectedMixin:
    """An admin action that stops the selected running rows through their service."""

    def has_promote_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("registry.promote_modelversion")

    def stop_one(self, request: HttpRequest, obj: Any) -> None:
        raise NotImplementedError

    @admin.action(description="Stop the selected (active) ones", permissions=["promote"])
    def stop_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        for obj in queryset:
            try:
                self.stop_one(request, obj)
            except DomainError as exc:
                self.message_user(request, exc.message, messages.WARNING)
            else:
                self.message_user(request, f"Stopped {obj}.", messages.SUCCESS)


@admin.register(ShadowComparison)
class ShadowComparisonAdmin(StopSelectedMixin, ReadOnlyAdmin):
    list_display = (
        "id", "shadow", "production", "status", "decision", "n_bars", "statistic_shown",
        "p_value_shown", "created_at", "ended_at",
    )  # fmt: skip
    list_filter = ("status", "decision", "model__model_type")
    search_fields = ("model__model_id", "reason")
    date_hierarchy = "created_at"
    list_select_related = ("model", "shadow__model", "production__model")
    readonly_fields = ("curve",)
    inlines = (ShadowObservationInline,)
    actions = ("stop_selected",)

    @admin.display(description="statistic", ordering="statistic")
    def statistic_shown(self, obj: ShadowComparison) -> str:
        return _stat(obj.statistic)

    @admin.display(description="p-value", ordering="p_value")
    def p_value_shown(self, obj: ShadowComparison) -> str:
        return _stat(obj.p_value, "{:.4f}")

    def stop_one(self, request: HttpRequest, obj: ShadowComparison) -> None:
        from training.shadow import shadow_stop

        shadow_stop(
            comparison_id=obj.pk, actor=request.user.get_username(), reason="stopped in the admin"
        )

    @admin.display(description="shadow against production")
    def curve(self, obj: ShadowComparison) -> str:
        if not obj.n_bars:
            return "-"
        url = reverse("clm-shadow-curve", args=[obj.pk])
        return format_html('<img src="{}" width="810" alt="Shadow against production">', url)


class ExperimentArmInline(ReadOnlyInline):
    model = ExperimentArm
    fields = ("version", "role", "weight", "n_bars", "mean_return", "sharpe")
    readonly_fields = fields
    show_change_link = False


class ExperimentEvaluationInline(ReadOnlyInline):
    model = ExperimentEvaluation
    fields = ("created_at", "n_bars", "look", "tested_bars", "decision", "reason")
    readonly_fields = fields
    show_change_link = False


@admin.register(Experiment)
class ExperimentAdmin(StopSelectedMixin, ReadOnlyAdmin):
    list_display = (
        "id", "model", "status", "metric", "stopping_rule", "returns_source", "n_bars",
        "decision", "winner", "created_at", "ended_at",
    )  # fmt: skip
    list_filter = ("status", "decision", "metric", "stopping_rule", "returns_source")
    search_fields = ("model__model_id", "reason", "description")
    date_hierarchy = "created_at"
    list_select_related = ("model", "winner__model")
    inlines = (ExperimentArmInline, ExperimentEvaluationInline)
    actions = ("stop_selected",)

    def stop_one(self, request: HttpRequest, obj: Experiment) -> None:
        from training.experiments import experiment_stop

        experiment_stop(
            experiment_id=obj.pk, actor=request.user.get_username(), reason="stopped in the admin"
        )


@admin.register(RollbackDecision)
class RollbackDecisionAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at", "model", "from_version", "to_version", "outcome", "source", "drawdown",
        "rolling_sharpe", "n_bars",
    )  # fmt: skip
    list_filter = ("outcome", "source", "model__model_type")
    search_fields = ("model__model_id", "reason")
    date_hierarchy = "created_at"
    list_select_related = ("model", "from_version__model", "to_version__model")


@admin.register(RealisedReturn)
class RealisedReturnAdmin(ReadOnlyAdmin):
    list_display = ("version", "timestamp", "value", "source", "experiment", "recorded_at")
    list_filter = ("source", "version__model__model_type")
    search_fields = ("version__model__model_id",)
    date_hierarchy = "timestamp"
    list_select_related = ("version__model", "experiment")


class ShadowComparisonInline(ReadOnlyInline):
    """On the version's page: the comparisons it shadowed production in."""

    model = ShadowComparison
    fk_name = "shadow"
    verbose_name_plural = "Shadow comparisons"
    fields = (
        "created_at", "production", "status", "decision", "n_bars", "statistic", "p_value",
        "reason",
    )  # fmt: skip
    readonly_fields = fields


class VersionExperimentInline(ReadOnlyInline):
    """On the version's page: the experiments it was an arm of, with their verdicts."""

    model = ExperimentArm
    verbose_name_plural = "Experiments"
    fields = ("experiment", "role", "weight", "experiment_status", "verdict", "sharpe")
    readonly_fields = fields

    @admin.display(description="status")
    def experiment_status(self, obj: ExperimentArm) -> str:
        return obj.experiment.status

    @admin.display(description="verdict")
    def verdict(self, obj: ExperimentArm) -> str:
        return obj.experiment.reason or "-"


ModelVersionAdmin.inlines = (
    *ModelVersionAdmin.inlines,
    ShadowComparisonInline,
    VersionExperimentInline,
)
