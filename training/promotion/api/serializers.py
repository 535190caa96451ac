"""Input and output serializers of shadow comparisons, experiments, allocations, reported results
and automatic rollbacks (one per operation, as in registry.api.serializers)."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from registry.api.serializers import MAX_INT32, FiniteFloatField, ReadModelSerializer
from registry.models import ModelStatus
from training.promotion.experiments import MAX_RESULTS_PER_REQUEST
from training.promotion.models import (
    AlphaSpending,
    ArmRole,
    ComparisonStatus,
    Experiment,
    ExperimentArm,
    ExperimentDecision,
    ExperimentEvaluation,
    ExperimentMetric,
    ExperimentStatus,
    ReturnSource,
    RollbackDecision,
    RollbackOutcome,
    ShadowComparison,
    ShadowDecision,
    ShadowObservation,
    StoppingRule,
)
from training.promotion.shadow import shadow_design


def _optional_choice(choices: list[tuple[str, str]]) -> serializers.ChoiceField:
    return serializers.ChoiceField(choices=choices, required=False, allow_blank=True)


def _version_number(**kwargs: Any) -> serializers.IntegerField:
    return serializers.IntegerField(min_value=1, max_value=MAX_INT32, **kwargs)


class StopInputSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000, allow_blank=True, default="")


# ---------------------------------------------------------------------------------------------
# Shadow comparisons


class ShadowDesignSerializer(serializers.Serializer):
    """The rules fixed when the comparison started, with the looks' bar counts and boundaries."""

    min_bars = serializers.IntegerField()
    min_trades = serializers.IntegerField()
    max_bars = serializers.IntegerField()
    looks = serializers.ListField(child=serializers.IntegerField(), help_text="Bar counts.")
    boundaries = serializers.ListField(
        child=serializers.FloatField(), help_text="One-sided z boundary of each look."
    )
    alpha = serializers.FloatField()
    spending = serializers.ChoiceField(choices=AlphaSpending.choices)
    auto_promote = serializers.BooleanField()
    fee = serializers.FloatField()
    periods_per_year = serializers.IntegerField()


class ShadowComparisonSerializer(ReadModelSerializer):
    model_id = serializers.CharField(source="model.model_id", read_only=True)
    shadow_version = serializers.IntegerField(source="shadow.version", read_only=True)
    shadow_status = serializers.ChoiceField(
        source="shadow.status", choices=ModelStatus.choices, read_only=True
    )
    production_version = serializers.IntegerField(source="production.version", read_only=True)
    design = serializers.SerializerMethodField()
    curve_url = serializers.SerializerMethodField()

    class Meta:
        model = ShadowComparison
        fields = [
            "id", "model_id", "shadow_version", "shadow_status", "production_version", "status",
            "decision", "reason", "started_by", "created_at", "ended_at", "start_after",
            "looks_done", "n_bars", "last_bar_at", "shadow_trades", "production_trades",
            "estimate", "statistic", "p_value", "ci_low", "ci_high", "shadow_sharpe",
            "production_sharpe", "last_error", "design", "curve_url",
        ]  # fmt: skip
        read_only_fields = fields

    @extend_schema_field(ShadowDesignSerializer)
    def get_design(self, obj: ShadowComparison) -> dict[str, Any]:
        design = shadow_design(obj)
        return ShadowDesignSerializer(
            {
                "min_bars": obj.min_bars,
                "min_trades": obj.min_trades,
                "max_bars": obj.max_bars,
                "looks": list(design.looks),
                "boundaries": list(design.boundaries),
                "alpha": obj.alpha,
                "spending": obj.spending,
                "auto_promote": obj.auto_promote,
                "fee": obj.fee,
                "periods_per_year": obj.periods_per_year,
            }
        ).data

    def get_curve_url(self, obj: ShadowComparison) -> str:
        # Absolute, as every URL in CLM's answers (pagination links, Location headers).
        path = reverse("clm-shadow-curve", args=[obj.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class ShadowObservationSerializer(ReadModelSerializer):
    class Meta:
        model = ShadowObservation
        fields = [
            "id", "created_at", "first_bar_at", "last_bar_at", "n_new", "n_bars",
            "shadow_trades", "production_trades", "look", "tested_bars", "estimate", "se",
            "statistic", "p_value", "ci_low", "ci_high", "boundary", "shadow_sharpe",
            "production_sharpe", "decision", "reason",
        ]  # fmt: skip
        read_only_fields = fields


class ShadowComparisonDetailSerializer(ShadowComparisonSerializer):
    observations = ShadowObservationSerializer(many=True, read_only=True)

    class Meta(ShadowComparisonSerializer.Meta):
        fields = [*ShadowComparisonSerializer.Meta.fields, "observations"]
        read_only_fields = fields


class ShadowQuerySerializer(serializers.Serializer):
    model_id = serializers.CharField(required=False, allow_blank=True, max_length=120)
    version = _version_number(required=False, help_text="The shadow version.")
    status = _optional_choice(ComparisonStatus.choices)
    decision = _optional_choice(ShadowDecision.choices)


class ShadowStartInputSerializer(serializers.Serializer):
    model_id = serializers.CharField(max_length=120)
    version = _version_number()
    auto_promote = serializers.BooleanField(
        allow_null=True, default=None, help_text="Default: the model type's shadow policy."
    )
    reason = serializers.CharField(max_length=2000, allow_blank=True, default="")


# ---------------------------------------------------------------------------------------------
# Experiments


class ExperimentArmSerializer(ReadModelSerializer):
    version = serializers.IntegerField(source="version.version", read_only=True)
    status = serializers.ChoiceField(
        source="version.status", choices=ModelStatus.choices, read_only=True
    )

    class Meta:
        model = ExperimentArm
        fields = ["version", "status", "role", "weight", "n_bars", "mean_return", "sharpe"]
        read_only_fields = fields


class ExperimentSerializer(ReadModelSerializer):
    model_id = serializers.CharField(source="model.model_id", read_only=True)
    winner = serializers.IntegerField(source="winner.version", read_only=True, allow_null=True)
    arms = ExperimentArmSerializer(many=True, read_only=True)

    class Meta:
        model = Experiment
        fields = [
            "id", "model_id", "status", "description", "metric", "stopping_rule",
            "returns_source", "min_bars", "max_bars", "looks", "alpha", "spending",
            "auto_promote", "fee", "periods_per_year", "start_after", "created_by", "created_at",
            "ended_at", "looks_done", "n_bars", "decision", "reason", "winner", "estimate",
            "statistic", "p_value", "ci_low", "ci_high", "arms",
        ]  # fmt: skip
        read_only_fields = fields


class CandidateTestSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    metric = serializers.ChoiceField(choices=ExperimentMetric.choices)
    n = serializers.IntegerField()
    estimate = serializers.FloatField()
    se = serializers.FloatField()
    statistic = serializers.FloatField()
    p_value = serializers.FloatField()
    critical = serializers.FloatField()
    ci_low = serializers.FloatField()
    ci_high = serializers.FloatField()
    lags = serializers.FloatField()
    rejects = serializers.BooleanField()


class ExperimentEvaluationSerializer(ReadModelSerializer):
    results = CandidateTestSerializer(many=True, read_only=True)

    class Meta:
        model = ExperimentEvaluation
        fields = ["id", "created_at", "n_bars", "look", "tested_bars", "results", "decision",
                  "reason"]  # fmt: skip
        read_only_fields = fields


class ExperimentDetailSerializer(ExperimentSerializer):
    evaluations = ExperimentEvaluationSerializer(many=True, read_only=True)

    class Meta(ExperimentSerializer.Meta):
        fields = [*ExperimentSerializer.Meta.fields, "evaluations"]
        read_only_fields = fields


class ExperimentQuerySerializer(serializers.Serializer):
    model_id = serializers.CharField(required=False, allow_blank=True, max_length=120)
    status = _optional_choice(ExperimentStatus.choices)
    decision = _optional_choice(ExperimentDecision.choices)


class ArmInputSerializer(serializers.Serializer):
    version = _version_number()
    weight = FiniteFloatField(help_text="Share of capital in (0, 1]; the arms' weights sum to 1.")


class ExperimentStartInputSerializer(serializers.Serializer):
    model_id = serializers.CharField(max_length=120)
    arms = ArmInputSerializer(
        many=True,
        help_text="Production and one or more candidates of the same model, with their weights.",
    )
    metric = serializers.ChoiceField(
        choices=ExperimentMetric.choices, default=ExperimentMetric.SHARPE
    )
    stopping_rule = serializers.ChoiceField(
        choices=StoppingRule.choices, default=StoppingRule.GROUP_SEQUENTIAL
    )
    min_bars = serializers.IntegerField(min_value=1, max_value=MAX_INT32, default=500)
    max_bars = serializers.IntegerField(
        min_value=1, max_value=MAX_INT32, allow_null=True, default=None,
        help_text="Group sequential: the last look. Default: min_bars.",
    )  # fmt: skip
    looks = serializers.IntegerField(min_value=1, max_value=20, default=4)
    alpha = FiniteFloatField(default=0.05)
    spending = serializers.ChoiceField(
        choices=AlphaSpending.choices, default=AlphaSpending.OBRIEN_FLEMING
    )
    returns_source = serializers.ChoiceField(
        choices=ReturnSource.choices, default=ReturnSource.REPORTED
    )
    auto_promote = serializers.BooleanField(default=True)
    description = serializers.CharField(max_length=2000, allow_blank=True, default="")


# ---------------------------------------------------------------------------------------------
# Allocation and results


class AllocationArmSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    role = serializers.ChoiceField(choices=ArmRole.choices)
    status = serializers.ChoiceField(choices=ModelStatus.choices)
    weight = serializers.FloatField()
    artifact_sha256 = serializers.CharField()


class AllocationSerializer(serializers.Serializer):
    model_id = serializers.CharField()
    experiment_id = serializers.IntegerField(
        source="experiment.pk", allow_null=True, default=None, help_text="Null: no experiment."
    )
    arms = AllocationArmSerializer(many=True)
    as_of = serializers.DateTimeField()


# "return" is a Python keyword, so the row's fields are declared through the metaclass.
ResultRowSerializer = type(
    "ResultRowSerializer",
    (serializers.Serializer,),
    {
        "version": _version_number(),
        "timestamp": serializers.DateTimeField(help_text="The bar the return was earned on."),
        "return": FiniteFloatField(
            min_value=-1.0, help_text="Per-bar return as a fraction of the arm's capital."
        ),
        "__doc__": "One realised per-bar return of one version.",
    },
)


class ResultsInputSerializer(serializers.Serializer):
    experiment = serializers.IntegerField(
        min_value=1, max_value=MAX_INT32, required=False,
        help_text="Default: the model's running experiment, if any.",
    )  # fmt: skip
    results = ResultRowSerializer(many=True, max_length=MAX_RESULTS_PER_REQUEST, min_length=1)


class ResultsResponseSerializer(serializers.Serializer):
    model_id = serializers.CharField()
    experiment_id = serializers.IntegerField(allow_null=True)
    stored = serializers.IntegerField()


# ---------------------------------------------------------------------------------------------
# Rollbacks


class RollbackDecisionSerializer(ReadModelSerializer):
    model_id = serializers.CharField(source="model.model_id", read_only=True)
    from_version = serializers.IntegerField(source="from_version.version", read_only=True)
    to_version = serializers.IntegerField(
        source="to_version.version", read_only=True, allow_null=True
    )

    class Meta:
        model = RollbackDecision
        fields = [
            "id", "model_id", "from_version", "to_version", "created_at", "outcome", "source",
            "window_start", "window_end", "n_bars", "drawdown", "rolling_sharpe", "breaches",
            "skipped", "reason",
        ]  # fmt: skip
        read_only_fields = fields


class RollbackQuerySerializer(serializers.Serializer):
    model_id = serializers.CharField(required=False, allow_blank=True, max_length=120)
    outcome = _optional_choice(RollbackOutcome.choices)
