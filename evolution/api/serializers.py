"""Input and output serializers of the evolution API, one per operation."""

from __future__ import annotations

import math
from typing import Any, cast

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from evolution import selectors
from evolution.models import (
    CandidateOrigin,
    CandidateStatus,
    EvaluationStatus,
    EvolutionRun,
    Generation,
    RunStatus,
    StrategyCandidate,
)
from evolution.search_space import supported_model_types
from evolution.selectors import CANDIDATE_ORDERINGS, MAX_LINEAGE_DEPTH
from registry.api.serializers import FiniteFloatField
from registry.models import ModelType, Timeframe

MAX_INT32 = 2**31 - 1
SYMBOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$"


def _optional_choice(choices: list[tuple[str, str]]) -> serializers.ChoiceField:
    return serializers.ChoiceField(choices=choices, required=False, allow_blank=True)


# ---------------------------------------------------------------------------------------------
# Candidates


class CandidateQuerySerializer(serializers.Serializer):
    status = _optional_choice(CandidateStatus.choices)
    origin = _optional_choice(CandidateOrigin.choices)
    model_type = _optional_choice(ModelType.choices)
    symbol = serializers.CharField(required=False, allow_blank=True, max_length=32)
    timeframe = _optional_choice(Timeframe.choices)
    run = serializers.UUIDField(required=False)
    generation = serializers.IntegerField(required=False, min_value=1, max_value=MAX_INT32)
    evaluation_status = _optional_choice(EvaluationStatus.choices)
    ordering = serializers.ChoiceField(
        choices=sorted(CANDIDATE_ORDERINGS), default="-created_at", required=False
    )


class TopQuerySerializer(serializers.Serializer):
    n = serializers.IntegerField(min_value=1, max_value=100, default=10)
    min_trades = serializers.IntegerField(min_value=0, max_value=MAX_INT32, default=0)
    model_type = _optional_choice(ModelType.choices)
    symbol = serializers.CharField(required=False, allow_blank=True, max_length=32)
    timeframe = _optional_choice(Timeframe.choices)
    run = serializers.UUIDField(required=False)
    generation = serializers.IntegerField(required=False, min_value=1, max_value=MAX_INT32)


class DetailQuerySerializer(serializers.Serializer):
    depth = serializers.IntegerField(min_value=0, max_value=MAX_LINEAGE_DEPTH, default=5)


class CandidateListSerializer(serializers.ListSerializer):
    """Reads the DSR of a whole page at once (selectors.candidates_deflated_sharpe)."""

    def to_representation(self, data: Any) -> list[Any]:
        items = list(data.all() if hasattr(data, "all") else data)
        context = cast(dict[str, Any], self.context)
        context["deflated_sharpe_of"] = selectors.candidates_deflated_sharpe(items)
        return super().to_representation(items)


class CandidateSerializer(serializers.ModelSerializer):
    """A candidate in a list: where it came from, how it scored (METRICS.md names).

    `dsr` is the candidate's one deflated Sharpe ratio: its out-of-sample returns deflated by
    `dsr_trials` = K, every trial on its data so far (the number the selection gate uses).
    """

    run = serializers.UUIDField(source="run_id", read_only=True, allow_null=True)
    generation = serializers.IntegerField(
        source="generation.number", read_only=True, allow_null=True
    )
    sharpe = serializers.SerializerMethodField()
    max_drawdown = serializers.SerializerMethodField()
    profit_factor = serializers.SerializerMethodField()
    profit_factor_infinite = serializers.SerializerMethodField()
    trades = serializers.SerializerMethodField()
    dsr = serializers.SerializerMethodField()
    dsr_trials = serializers.SerializerMethodField()

    class Meta:
        model = StrategyCandidate
        list_serializer_class = CandidateListSerializer
        fields = [
            "id", "base_strategy", "model_type", "symbol", "timeframe", "origin", "status",
            "evaluation_status", "run", "generation", "index", "params", "feasible",
            "pareto_rank", "fitness", "sharpe", "max_drawdown", "profit_factor",
            "profit_factor_infinite", "trades", "dsr", "dsr_trials", "created_at",
        ]  # fmt: skip
        read_only_fields = fields

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_sharpe(self, obj: StrategyCandidate) -> float | None:
        return obj.metrics.get("sharpe")

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_max_drawdown(self, obj: StrategyCandidate) -> float | None:
        return obj.metrics.get("max_drawdown")

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_profit_factor(self, obj: StrategyCandidate) -> float | None:
        return obj.metrics.get("profit_factor")

    @extend_schema_field(serializers.BooleanField())
    def get_profit_factor_infinite(self, obj: StrategyCandidate) -> bool:
        return bool(obj.metrics.get("profit_factor_infinite"))

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_trades(self, obj: StrategyCandidate) -> int | None:
        return obj.metrics.get("trades")

    def _deflated(self, obj: StrategyCandidate) -> tuple[float | None, int]:
        known = self.context.get("deflated_sharpe_of") or {}
        if obj.pk not in known:
            known = {**known, obj.pk: selectors.candidate_deflated_sharpe(candidate=obj)}
            cast(dict[str, Any], self.context)["deflated_sharpe_of"] = known
        return known[obj.pk]

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_dsr(self, obj: StrategyCandidate) -> float | None:
        return self._deflated(obj)[0]

    @extend_schema_field(
        serializers.IntegerField(help_text="K: every trial on the same data (0: not evaluated).")
    )
    def get_dsr_trials(self, obj: StrategyCandidate) -> int:
        return self._deflated(obj)[1]


class AncestorSerializer(CandidateSerializer):
    depth = serializers.IntegerField(read_only=True)
    parent_ids = serializers.ListField(child=serializers.UUIDField(), read_only=True)

    class Meta(CandidateSerializer.Meta):
        fields = [
            "id", "origin", "status", "evaluation_status", "run", "generation", "sharpe",
            "max_drawdown", "profit_factor", "trades", "fitness", "mutation_description",
            "depth", "parent_ids",
        ]  # fmt: skip
        read_only_fields = fields


class LineageSerializer(serializers.Serializer):
    parent_ids = serializers.ListField(child=serializers.UUIDField())
    ancestors = AncestorSerializer(many=True, help_text="Breadth-first, each once, to `depth`.")
    children = AncestorSerializer(many=True)


class JobSummarySerializer(serializers.Serializer):
    id = serializers.UUIDField()
    model_id = serializers.CharField(source="model.model_id")
    status = serializers.CharField()
    trigger_reason = serializers.CharField()
    created_at = serializers.DateTimeField()


class VersionSummarySerializer(serializers.Serializer):
    model_id = serializers.CharField(source="model.model_id")
    version = serializers.IntegerField()
    status = serializers.CharField()


class DeflatedSharpeSerializer(serializers.Serializer):
    sharpe = serializers.FloatField(allow_null=True)
    dsr = serializers.FloatField(allow_null=True)
    trials = serializers.IntegerField(help_text="K: every trial on the same data.")


class CandidateDetailSerializer(CandidateSerializer):
    training_job = JobSummarySerializer(read_only=True, allow_null=True)
    produced_version = VersionSummarySerializer(read_only=True, allow_null=True)
    deflated_sharpe = serializers.SerializerMethodField()
    lineage = serializers.SerializerMethodField()

    class Meta(CandidateSerializer.Meta):
        fields = [
            *CandidateSerializer.Meta.fields, "genome", "mutation_description", "metrics",
            "training_metrics", "objectives", "crowding_distance", "attempts", "error_message",
            "evaluated_at", "evaluation_seconds", "task_seconds", "training_job",
            "produced_version", "selected_by", "selected_at", "deflated_sharpe", "lineage",
        ]  # fmt: skip
        read_only_fields = fields

    @extend_schema_field(DeflatedSharpeSerializer)
    def get_deflated_sharpe(self, obj: StrategyCandidate) -> dict[str, Any]:
        """The same DSR as `dsr` and `dsr_trials`, beside the Sharpe ratio it deflates."""
        dsr, trials = self._deflated(obj)
        return {"sharpe": obj.metrics.get("sharpe"), "dsr": dsr, "trials": trials}

    @extend_schema_field(LineageSerializer)
    def get_lineage(self, obj: StrategyCandidate) -> dict[str, Any]:
        lineage = self.context["lineage"]
        ancestors = []
        for candidate, depth, parent_ids in lineage.ancestors:
            candidate.depth, candidate.parent_ids = depth, parent_ids
            ancestors.append(candidate)
        for child in lineage.children:
            child.depth, child.parent_ids = -1, [str(obj.pk)]
        return {
            "parent_ids": self.context["parent_ids"],
            "ancestors": AncestorSerializer(ancestors, many=True).data,
            "children": AncestorSerializer(lineage.children, many=True).data,
        }


class TopCandidateSerializer(CandidateSerializer):
    """A candidate with its non-dominated rank and crowding distance among those compared.

    Both are null for an infeasible candidate; an infinite crowding distance (an extreme of its
    front) is null with `crowding_infinite` set, as JSON has no infinity.
    """

    rank = serializers.IntegerField(read_only=True, allow_null=True)
    crowding = serializers.SerializerMethodField()
    crowding_infinite = serializers.SerializerMethodField()

    class Meta(CandidateSerializer.Meta):
        fields = [*CandidateSerializer.Meta.fields, "rank", "crowding", "crowding_infinite"]
        read_only_fields = fields

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_crowding(self, obj: StrategyCandidate) -> float | None:
        crowding = obj.crowding
        return None if crowding is None or math.isinf(crowding) else crowding

    @extend_schema_field(serializers.BooleanField())
    def get_crowding_infinite(self, obj: StrategyCandidate) -> bool:
        return obj.crowding is not None and math.isinf(obj.crowding)


class SelectInputSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class SelectResponseSerializer(serializers.Serializer):
    candidate = CandidateSerializer()
    job = JobSummarySerializer()


class MutateInputSerializer(serializers.Serializer):
    seed = serializers.IntegerField(min_value=0, max_value=MAX_INT32, required=False)


class CrossoverInputSerializer(serializers.Serializer):
    first = serializers.UUIDField()
    second = serializers.UUIDField()
    seed = serializers.IntegerField(min_value=0, max_value=MAX_INT32, required=False)


class ProposeInputSerializer(serializers.Serializer):
    model_id = serializers.CharField(required=False, max_length=120)
    model_type = serializers.ChoiceField(choices=ModelType.choices, required=False)
    symbol = serializers.RegexField(SYMBOL_PATTERN, max_length=32, required=False)
    timeframe = serializers.ChoiceField(choices=Timeframe.choices, required=False)
    sharpe = FiniteFloatField(help_text="The production model's recent Sharpe ratio.")
    sharpe_threshold = FiniteFloatField(default=0.5)
    regime = serializers.CharField(required=False, allow_blank=True, max_length=64)
    n = serializers.IntegerField(min_value=1, max_value=32, default=3)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        for name in ("sharpe", "sharpe_threshold"):
            if not math.isfinite(attrs[name]):
                raise serializers.ValidationError({name: ["Must be a finite number."]})
        named = attrs.get("model_id") or all(
            attrs.get(k) for k in ("model_type", "symbol", "timeframe")
        )
        if not named:
            raise serializers.ValidationError(
                {"model_id": ["Give model_id, or model_type, symbol and timeframe."]}
            )
        if attrs.get("symbol"):
            attrs["symbol"] = attrs["symbol"].upper()
        return attrs


# ---------------------------------------------------------------------------------------------
# Runs


class RunInputSerializer(serializers.Serializer):
    model_type = serializers.ChoiceField(
        choices=ModelType.choices, help_text=f"One of {', '.join(supported_model_types())}."
    )
    symbol = serializers.RegexField(
        SYMBOL_PATTERN,
        max_length=32,
        error_messages={"invalid": "Use 1-32 letters, digits, '-' or '_' (e.g. BTCUSDT)."},
    )
    timeframe = serializers.ChoiceField(choices=Timeframe.choices)
    population_size = serializers.IntegerField(min_value=4, max_value=512, default=32)
    generations = serializers.IntegerField(min_value=1, max_value=500, default=10)
    seed = serializers.IntegerField(min_value=0, max_value=MAX_INT32, default=0)
    min_trades = serializers.IntegerField(
        min_value=0, max_value=MAX_INT32, required=False, allow_null=True, default=None,
        help_text="Constraint; defaults to the model type's min_trades gate.",
    )  # fmt: skip
    search_space = serializers.DictField(
        default=dict,
        help_text='Overrides per parameter: {"low": a, "high": b}, {"choices": [...]}, or a '
        "plain value to hold it constant.",
    )
    window_start = serializers.DateTimeField(allow_null=True, default=None)
    window_end = serializers.DateTimeField(allow_null=True, default=None)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        start, end = attrs["window_start"], attrs["window_end"]
        if start and end and start >= end:
            raise serializers.ValidationError({"window_start": ["Must be before window_end."]})
        return {**attrs, "symbol": attrs["symbol"].upper()}


class RunQuerySerializer(serializers.Serializer):
    status = _optional_choice(RunStatus.choices)
    model_type = _optional_choice(ModelType.choices)
    symbol = serializers.CharField(required=False, allow_blank=True, max_length=32)


RUN_FIELDS = [
    "id", "model_type", "symbol", "timeframe", "population_size", "generations", "seed",
    "min_trades", "fee", "eval_fraction", "validation_fraction", "window_start", "window_end",
    "n_bars", "status", "current_generation", "error_message", "requested_by", "created_at",
    "updated_at", "finished_at",
]  # fmt: skip


class RunSerializer(serializers.ModelSerializer):
    n_candidates = serializers.IntegerField(read_only=True, required=False)

    class Meta:
        model = EvolutionRun
        fields = [*RUN_FIELDS, "n_candidates"]
        read_only_fields = fields


class GenerationSerializer(serializers.ModelSerializer):
    front_png = serializers.SerializerMethodField()

    class Meta:
        model = Generation
        fields = [
            "number", "status", "hypervolume", "n_evaluated", "n_failed", "front",
            "search_seconds", "evaluation_seconds", "created_at", "completed_at", "front_png",
        ]  # fmt: skip
        read_only_fields = fields

    def get_front_png(self, obj: Generation) -> str:
        path = reverse(
            "clm-evolution-front", kwargs={"run_id": obj.run_id, "number": obj.number, "fmt": "png"}
        )
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class RunDetailSerializer(RunSerializer):
    """A run with every generation so far: its Pareto front, hypervolume and picture."""

    generation_list = GenerationSerializer(source="generation_set", many=True, read_only=True)

    class Meta(RunSerializer.Meta):
        fields = [*RUN_FIELDS, "search_space", "generation_list"]
        read_only_fields = fields


class StatsSerializer(serializers.Serializer):
    candidates = serializers.IntegerField()
    by_status = serializers.DictField(child=serializers.IntegerField())
    by_origin = serializers.DictField(child=serializers.IntegerField())
    by_evaluation_status = serializers.DictField(child=serializers.IntegerField())
    runs = serializers.DictField(child=serializers.IntegerField())
    best_sharpe = serializers.FloatField(allow_null=True)
