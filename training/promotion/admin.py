"""Admin of promotion: the gate, shadow and rollback policies are edited here; comparisons,
experiments and decisions are read here, and stopped through the services. The version page of
the registry's admin gains this app's inlines (its shadow comparisons and experiments).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from clm_project.exceptions import DomainError
from registry import display
from registry.admin import ModelVersionAdmin, ReadOnlyAdmin, ReadOnlyInline, RegisteredModelAdmin
from registry.models import RegisteredModel
from training.promotion.models import (
    Experiment,
    ExperimentArm,
    ExperimentEvaluation,
    PromotionPolicy,
    RealisedReturn,
    RollbackDecision,
    RollbackPolicy,
    ShadowComparison,
    ShadowObservation,
    ShadowPolicy,
)
from training.promotion.policies import evaluation_policy_for
from training.promotion.rollback import rollback_policy_for
from training.promotion.shadow import shadow_policy_for


class PromotionPolicyForm(forms.ModelForm):
    """Field-level messages for the ranges the database also enforces."""

    class Meta:
        model = PromotionPolicy
        fields = (
            "model_type", "min_sharpe", "min_win_rate", "min_profit_factor", "max_drawdown",
            "min_trades", "min_dsr", "regime_min_bars", "regime_max_loss", "auto_promote", "fee",
            "eval_fraction", "validation_fraction",
        )  # fmt: skip

    def clean_regime_max_loss(self) -> float | None:
        value = self.cleaned_data["regime_max_loss"]
        if value is not None and not 0.0 <= value <= 1.0:
            raise forms.ValidationError("A regime's loss is a fraction in [0, 1]: 0.05 is 5 %.")
        return value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        bars, loss = cleaned.get("regime_min_bars"), cleaned.get("regime_max_loss")
        if (bars is None) != (loss is None) and not self.errors:
            raise forms.ValidationError(
                "The regime gate needs both its minimum bars and its maximum loss (or neither)."
            )
        test, validation = cleaned.get("eval_fraction"), cleaned.get("validation_fraction")
        if test is not None and validation is not None and test + validation >= 1.0:
            self.add_error(
                "validation_fraction",
                "The validation and test shares together must leave bars to train on (< 1).",
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

    def clean_validation_fraction(self) -> float:
        value = self.cleaned_data["validation_fraction"]
        if not 0.0 < value < 1.0:
            raise forms.ValidationError("The validation share of the bars must be in (0, 1).")
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
        "min_trades", "min_dsr", "auto_promote", "fee", "eval_fraction", "validation_fraction",
        "updated_at",
    )  # fmt: skip
    list_filter = ("auto_promote",)
    search_fields = ("model_type",)


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


class StopSelectedMixin(admin.ModelAdmin):
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
        from training.promotion.shadow import shadow_stop

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
        from training.promotion.experiments import experiment_stop

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


ModelVersionAdmin.inlines = [
    *ModelVersionAdmin.inlines,
    ShadowComparisonInline,
    VersionExperimentInline,
]


# ---------------------------------------------------------------------------------------------
# The registered model's page: the promotion rules in force and where its versions are tested


def _policy_link(policy: Any, name: str) -> str:
    """The stored policy's admin page, or the page to add one when the default applies."""
    if policy.pk:
        url = reverse(f"admin:promotion_{name}_change", args=[policy.pk])
        return format_html('<a href="{}">edit</a>', url)
    url = reverse(f"admin:promotion_{name}_add") + f"?model_type={policy.model_type}"
    return format_html('default (<a href="{}">set one</a>)', url)


def policies_section(request: HttpRequest, model: RegisteredModel) -> str:
    """Gates and auto-promotion, shadow testing and automatic rollback for the model's type."""
    from django.conf import settings

    evaluation = evaluation_policy_for(
        model.model_type, auto_promote_default=settings.CLM_AUTO_PROMOTE
    )
    stored = PromotionPolicy.objects.filter(model_type=model.model_type).first()
    gates = evaluation.gates
    gate_text = ", ".join(
        [
            f"Sharpe ≥ {display.ratio(gates.min_sharpe)}",
            f"win rate ≥ {display.percent(gates.min_win_rate)}",
            f"profit factor ≥ {display.ratio(gates.min_profit_factor)}",
            f"max drawdown ≤ {display.percent(gates.max_drawdown)}",
            f"trades ≥ {gates.min_trades}",
            *([f"DSR ≥ {display.percent(gates.min_dsr)}"] if gates.min_dsr is not None else []),
        ]
    )
    promotion = format_html(
        "{}; auto-promote {}; fee {}, evaluated on the last {} of the bars (test), selected "
        "on the {} before them (validation)",
        gate_text, "on" if evaluation.auto_promote else "off",
        display.percent(evaluation.fee, 3), display.percent(evaluation.eval_fraction, 0),
        display.percent(evaluation.validation_fraction, 0),
    )  # fmt: skip
    promotion_link = (
        format_html('<a href="{}">edit</a>', reverse("admin:promotion_promotionpolicy_change",
                                                      args=[stored.pk]))
        if stored
        else format_html('default (<a href="{}">set one</a>)',
                         reverse("admin:promotion_promotionpolicy_add"))
    )  # fmt: skip
    shadow = shadow_policy_for(model.model_type)
    shadow_text = (
        f"mode {shadow.mode}, {shadow.min_bars}-{shadow.max_bars} bars, {shadow.looks} looks, "
        f"alpha {display.ratio(shadow.alpha, 3)}, "
        f"auto-promote {'on' if shadow.auto_promote else 'off'}"
    )
    rollback = rollback_policy_for(model.model_type)
    rollback_text = (
        ("on" if rollback.enabled else "off")
        + f": drawdown over {display.percent(rollback.max_drawdown)} or rolling Sharpe under "
        f"{display.ratio(rollback.min_rolling_sharpe)} over {rollback.window_bars} bars, "
        f"cooldown {display.ratio(rollback.cooldown_hours, 0)} h"
    )
    rows = [
        ("Promotion gates", promotion, promotion_link),
        ("Shadow testing", shadow_text, _policy_link(shadow, "shadowpolicy")),
        ("Automatic rollback", rollback_text, _policy_link(rollback, "rollbackpolicy")),
    ]
    body = format_html_join("", "<tr><th>{}</th><td>{}</td><td>{}</td></tr>", rows)
    return format_html('<table class="clm-table" id="policies">{}</table>', body)


def testing_section(request: HttpRequest, model: RegisteredModel) -> str:
    """Links to the model's shadow comparisons, experiments and rollback decisions."""
    links = []
    for name, label, count in (
        ("shadowcomparison", "Shadow comparisons", ShadowComparison.objects.filter(model=model)),
        ("experiment", "Experiments", Experiment.objects.filter(model=model)),
        ("rollbackdecision", "Rollback decisions", RollbackDecision.objects.filter(model=model)),
    ):
        url = reverse(f"admin:promotion_{name}_changelist") + f"?model__id__exact={model.pk}"
        links.append((url, label, count.count()))
    return format_html(
        '<p class="clm-links">{}</p>', format_html_join("", '<a href="{}">{} ({})</a>', links)
    )


RegisteredModelAdmin.sections += [
    ("Policies in force", policies_section),
    ("Shadows, experiments and rollbacks", testing_section),
]
