"""Input and output serializers of the event endpoints, monitor results, triggers and schedule.

The event input serializers also validate broker events (training.retraining.events'
event_receive): one definition of each event's fields for both doors.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from registry.api.serializers import (
    SYMBOL_PATTERN,
    FiniteFloatField,
    TrainingJobSerializer,
    TrainInputSerializer,
)
from registry.models import ModelType, Timeframe, TriggerReason
from training.models import (
    DriftReport,
    MonitorStatus,
    PerformanceReport,
    RegimeState,
    TriggerOutcome,
    TriggerRecord,
    TriggerSource,
)

MAX_AFFECTED_MODELS = 1_000


def _optional_choice(choices: list[tuple[str, str]]) -> serializers.ChoiceField:
    return serializers.ChoiceField(choices=choices, required=False, allow_blank=True)


# ---------------------------------------------------------------------------------------------
# Incoming events


class EventInputSerializer(serializers.Serializer):
    event_id = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=64,
        help_text="Your id for this event; a repeated id returns the first answer, doing nothing.",
    )


class DriftDetectedSerializer(EventInputSerializer):
    model_id = serializers.CharField(max_length=120)
    drift_score = FiniteFloatField(
        min_value=0.0, help_text="Compared with the policy's drift threshold (share of features)."
    )


class PerformanceDegradedSerializer(EventInputSerializer):
    model_id = serializers.CharField(max_length=120)
    sharpe_ratio = FiniteFloatField(help_text="Live Sharpe; compared with the policy threshold.")


class RegimeChangeSerializer(EventInputSerializer):
    new_regime = serializers.CharField(max_length=64)
    symbol = serializers.RegexField(SYMBOL_PATTERN, max_length=32, required=False)
    timeframe = serializers.ChoiceField(choices=Timeframe.choices, required=False)
    affected_models = serializers.ListField(
        child=serializers.CharField(max_length=120),
        required=False,
        allow_empty=False,
        max_length=MAX_AFFECTED_MODELS,
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        has_symbol, has_models = "symbol" in attrs, "affected_models" in attrs
        if has_symbol == has_models:
            raise serializers.ValidationError(
                {"non_field_errors": ["Give either symbol (and optionally timeframe) or "
                                      "affected_models."]}
            )  # fmt: skip
        if has_models and "timeframe" in attrs:
            raise serializers.ValidationError(
                {"timeframe": ["Only with symbol; affected_models name the models."]}
            )
        if has_symbol:
            attrs["symbol"] = attrs["symbol"].upper()
        return attrs


class ManualTrainingSerializer(TrainInputSerializer):
    """The fields of POST /clm/train; the trigger reason is always manual."""

    trigger_reason = None
    trigger_context = None
    event_id = serializers.CharField(required=False, allow_blank=True, max_length=64)


INCOMING_SERIALIZERS: dict[str, type[serializers.Serializer]] = {
    "drift_detected": DriftDetectedSerializer,
    "performance_degraded": PerformanceDegradedSerializer,
    "regime_change": RegimeChangeSerializer,
    "manual_training": ManualTrainingSerializer,
}


# ---------------------------------------------------------------------------------------------
# What an event caused


class TriggerResultSerializer(serializers.Serializer):
    trigger_id = serializers.IntegerField(source="record.pk")
    model_id = serializers.CharField(source="record.model_key")
    trigger_reason = serializers.CharField(source="record.trigger_reason")
    outcome = serializers.ChoiceField(choices=TriggerOutcome.choices)
    code = serializers.CharField(source="record.code", help_text="Why it was skipped or rejected.")
    reason = serializers.CharField(source="record.reason")
    priority = serializers.IntegerField(source="record.priority")
    duplicate = serializers.BooleanField(help_text="True: this event id was handled before.")
    job = TrainingJobSerializer(allow_null=True)


class EventAcceptedSerializer(serializers.Serializer):
    event_type = serializers.CharField()
    event_id = serializers.CharField(allow_blank=True)
    results = TriggerResultSerializer(many=True)


class EventRejectedSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField()
    errors = serializers.DictField(required=False)
    trigger_id = serializers.IntegerField(
        required=False, help_text="The rejected trigger's record (absent for unparsable bodies)."
    )


# ---------------------------------------------------------------------------------------------
# Trigger records


class TriggerRecordSerializer(serializers.ModelSerializer):
    model_id = serializers.CharField(source="model_key", read_only=True)
    job_id = serializers.UUIDField(read_only=True, allow_null=True)
    job_status = serializers.CharField(source="job.status", read_only=True, allow_null=True)

    class Meta:
        model = TriggerRecord
        fields = [
            "id", "created_at", "source", "event_type", "trigger_reason", "event_id", "model_id",
            "outcome", "code", "reason", "priority", "job_id", "job_status", "payload",
            "requested_by",
        ]  # fmt: skip
        read_only_fields = fields


class TriggerQuerySerializer(serializers.Serializer):
    model_id = serializers.CharField(required=False, allow_blank=True, max_length=120)
    outcome = _optional_choice(TriggerOutcome.choices)
    trigger_reason = _optional_choice(TriggerReason.choices)
    source = _optional_choice(TriggerSource.choices)
    code = serializers.CharField(required=False, allow_blank=True, max_length=32)


# ---------------------------------------------------------------------------------------------
# Monitor results


class _MonitorSerializer(serializers.ModelSerializer):
    model_id = serializers.CharField(source="model.model_id", read_only=True)
    version = serializers.IntegerField(source="version.version", read_only=True)
    trigger_id = serializers.IntegerField(read_only=True, allow_null=True)
    trigger_outcome = serializers.CharField(
        source="trigger.outcome", read_only=True, allow_null=True
    )


class DriftReportSerializer(_MonitorSerializer):
    class Meta:
        model = DriftReport
        fields = [
            "id", "model_id", "version", "created_at", "status", "detail", "reference_start",
            "reference_end", "current_start", "current_end", "n_reference", "n_current",
            "drift_score", "threshold", "drifted", "drifted_features", "features", "duration_ms",
            "trigger_id", "trigger_outcome",
        ]  # fmt: skip
        read_only_fields = fields


class PerformanceReportSerializer(_MonitorSerializer):
    class Meta:
        model = PerformanceReport
        fields = [
            "id", "model_id", "version", "created_at", "status", "detail", "window_start",
            "window_end", "n_bars", "sharpe", "rolling_sharpe", "rolling_window", "max_drawdown",
            "total_return", "trades", "exposure", "threshold", "degraded", "trigger_id",
            "trigger_outcome",
        ]  # fmt: skip
        read_only_fields = fields


class RegimeStateSerializer(serializers.ModelSerializer):
    class Meta:
        model = RegimeState
        fields = [
            "id", "symbol", "timeframe", "created_at", "status", "detail", "as_of", "regime",
            "trend", "volatility", "observed", "previous_regime", "changed", "metrics",
        ]  # fmt: skip
        read_only_fields = fields


class MonitorQuerySerializer(serializers.Serializer):
    model_id = serializers.CharField(required=False, allow_blank=True, max_length=120)
    status = _optional_choice(MonitorStatus.choices)
    flagged = serializers.BooleanField(
        allow_null=True, default=None, help_text="Drifted / degraded only (true) or not (false)."
    )


class RegimeQuerySerializer(serializers.Serializer):
    symbol = serializers.CharField(required=False, allow_blank=True, max_length=32)
    timeframe = _optional_choice(Timeframe.choices)
    changed = serializers.BooleanField(allow_null=True, default=None)


# ---------------------------------------------------------------------------------------------
# Schedule


class ScheduleEntrySerializer(serializers.Serializer):
    model_id = serializers.CharField()
    model_type = serializers.ChoiceField(choices=ModelType.choices)
    symbol = serializers.CharField()
    timeframe = serializers.CharField()
    enabled = serializers.BooleanField(help_text="Periodic retraining on for this model's type.")
    interval_hours = serializers.IntegerField()
    priority = serializers.IntegerField()
    last_training_at = serializers.DateTimeField(allow_null=True)
    next_training_at = serializers.DateTimeField(
        allow_null=True, help_text="Null: never trained (due now) or periodic retraining off."
    )
    due = serializers.BooleanField()
    active_job = serializers.BooleanField()


class ScheduleQuerySerializer(serializers.Serializer):
    model_type = _optional_choice(ModelType.choices)
    due = serializers.BooleanField(allow_null=True, default=None)
