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
from django.db import models
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from clm_project.exceptions import DomainError, NotFound
from registry import selectors, services
from registry.models import (
    EvaluationResult,
    JobStatus,
    LifecycleEvent,
    Liveness,
    ModelVersion,
    OutboxEvent,
    RegisteredModel,
    TrainingJob,
)

EDITABLE_NOTES = ("description", "tags", "notes")


def _all_fields(model: type[models.Model]) -> list[str]:
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
    inlines = [EvaluationInline, LifecycleInline]
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
        "short_id", "model", "trigger_reason", "status", "progress_bar", "current_step",
        "heartbeat_age", "requested_by", "created_at", "finished_at",
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

    @admin.display(description="step", ordering="step")
    def current_step(self, obj: TrainingJob) -> str:
        """The step the job is in now and for how long (not the last one it finished)."""
        if obj.status != JobStatus.IN_PROGRESS or obj.step_started_at is None:
            return obj.step
        seconds = (timezone.now() - obj.step_started_at).total_seconds()
        return f"{obj.step} (for {seconds:.0f} s)"

    @admin.display(description="heartbeat", ordering="heartbeat_at")
    def heartbeat_age(self, obj: TrainingJob) -> str:
        if obj.status != JobStatus.IN_PROGRESS or obj.heartbeat_at is None:
            return "-"
        return f"{(timezone.now() - obj.heartbeat_at).total_seconds():.0f} s ago"

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
