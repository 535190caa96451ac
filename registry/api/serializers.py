"""Input and output serializers, one per operation; enums use the lowercase model values."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Mapping
from datetime import UTC
from typing import Any

import orjson
from django.conf import settings
from django.db import models
from django.utils.module_loading import import_string
from rest_framework import serializers
from rest_framework.fields import SkipField

from clm_project.compiled import Rows
from registry.api.parsers import nesting_depth
from registry.models import (
    EvaluationResult,
    EventType,
    JobStatus,
    LifecycleEvent,
    ModelStatus,
    ModelType,
    ModelVersion,
    OutboxEvent,
    Timeframe,
    TrainingJob,
    TriggerReason,
)
from registry.selectors import ORDERINGS

MAX_INT32 = 2**31 - 1
SYMBOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$"


# ---------------------------------------------------------------------------------------------
# Shared


class FiniteFloatField(serializers.FloatField):
    """A float that refuses NaN and infinities, which have no meaning as a filter, and booleans,
    which JSON does not count as numbers."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool):
            self.fail("invalid")
        value = super().to_internal_value(data)
        if not math.isfinite(value):
            self.fail("invalid")
        return value


class JSONObjectField(serializers.DictField):
    """A JSON object that PostgreSQL's jsonb can store: no NUL characters, no lone surrogates.

    Depth and size are bounded (parameters and trigger context are small), and checked without
    recursion, so a hostile value is a field error rather than a RecursionError.
    """

    MAX_DEPTH = 32
    MAX_BYTES = 64 * 1024

    default_error_messages = {
        "unstorable": "Text may not contain NUL characters or unpaired surrogates.",
        "not_json": "Values must be text, numbers, booleans, null, lists or objects.",
        "too_deep": "Nested deeper than {limit} levels.",
        "too_large": "Larger than {limit} bytes as JSON.",
    }

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if nesting_depth(data, limit=self.MAX_DEPTH) > self.MAX_DEPTH:
            self.fail("too_deep", limit=self.MAX_DEPTH)
        value = super().to_internal_value(data)
        if not _plain_json(value):
            self.fail("not_json")
        if not _storable(value):
            self.fail("unstorable")
        if len(json.dumps(value).encode()) > self.MAX_BYTES:
            self.fail("too_large", limit=self.MAX_BYTES)
        return value


def _plain_json(value: Any) -> bool:
    """Only what JSON has (a multipart body can slip an uploaded file into a form field)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif not (item is None or isinstance(item, str | int | float | bool)):
            return False
    return True


def _storable(value: Any) -> bool:
    """Every string in `value` (keys too) is valid UTF-8 without NUL; walked without recursion."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")  # fails on unpaired surrogates
            except UnicodeEncodeError:
                return False
            if "\x00" in item:
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


class UTCDateTimeField(serializers.DateTimeField):
    """ISO 8601 in UTC with a `Z`, as DRF writes it, without its per-value timezone lookups.

    Rows come back from PostgreSQL aware and in UTC; list pages format hundreds of them.
    """

    def to_representation(self, value: Any) -> Any:
        if value is None or value.tzinfo is None:
            return super().to_representation(value)
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


_FIELDS: dict[type, dict[str, serializers.Field]] = {}


def _utc_iso(value: Any) -> Any:
    if value.tzinfo is None:
        return serializers.DateTimeField().to_representation(value)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _boolean(value: Any) -> Any:
    if value is True or value is False:
        return value
    return serializers.BooleanField().to_representation(value)


def _identity(value: Any) -> Any:
    return value


# The output conversion of each field type whose to_representation depends on the value alone
# (exact classes: a subclass may override it).
_CONVERTERS: dict[type, Callable[[Any], Any]] = {
    serializers.CharField: str,
    serializers.IntegerField: int,
    serializers.FloatField: float,
    serializers.BooleanField: _boolean,
    UTCDateTimeField: _utc_iso,
}

# One readable field: its name, attribute path, the conversion of a non-None value, and the
# bound field itself (the exact DRF path when the attribute path fails or yields a callable).
_Step = tuple[str, tuple[str, ...], Callable[[Any], Any], serializers.Field]
_PLANS: dict[type, list[_Step] | None] = {}


def _converter(field: serializers.Field) -> Callable[[Any], Any] | None:
    """How `field` turns a non-None attribute into output, or None when only DRF knows."""
    kind = type(field)
    if isinstance(field, serializers.JSONField) and kind is serializers.JSONField:
        return None if field.binary else _identity
    if isinstance(field, serializers.UUIDField) and kind is serializers.UUIDField:
        return str if field.uuid_format == "hex_verbose" else None
    if kind in (serializers.ChoiceField, serializers.BigIntegerField):
        return field.to_representation  # choices, or a setting: per field, still cheap
    if isinstance(field, ReadModelSerializer) and _plan(type(field)) is not None:
        return field.to_representation
    return _CONVERTERS.get(kind)


def _plan(cls: type[ReadModelSerializer]) -> list[_Step] | None:
    """The class's readable fields as steps, or None if one of them needs DRF's generic path
    (a method field, a relation, a nested list): such classes keep DRF's to_representation."""
    if cls not in _PLANS:
        steps: list[_Step] | None = []
        for field in cls().fields.values():
            if field.write_only:
                continue
            convert = _converter(field)
            overrides = type(field).get_attribute is not serializers.Field.get_attribute
            if convert is None or overrides or field.source == "*" or steps is None:
                steps = None
                continue
            steps.append((str(field.field_name), tuple(field.source_attrs), convert, field))
        _PLANS[cls] = steps
    return _PLANS[cls]


# One output field of a row writer: its name, its column, the conversion of a non-None value, and
# for a nested serializer its own fields (the column is then the nested row's primary key).
_Op = tuple[str, int, Callable[[Any], Any] | None, "list[_Op] | None"]
_WRITERS: dict[tuple[type, object], list[_Op] | None] = {}


def _row_ops(
    cls: type[ReadModelSerializer], rows: Rows, prefix: tuple[str, ...] = ()
) -> list[_Op] | None:
    """`_plan(cls)` with each attribute path resolved to its column of `rows`; None if a field
    has no column there. JSON columns are JSON text already: written as they are."""
    steps = _plan(cls)
    if steps is None:
        return None
    ops: list[_Op] = []
    for name, attrs, convert, field in steps:
        path = (*prefix, *attrs)
        if isinstance(field, ReadModelSerializer):
            model: type[models.Model] = field.Meta.model
            pk = rows.columns.get((*path, model._meta.pk.attname))
            nested = _row_ops(type(field), rows, path)
            if pk is None or nested is None:
                return None
            ops.append((name, pk, None, nested))
            continue
        column = rows.columns.get(path)
        if column is None:
            return None
        if column in rows.json:
            if convert is not _identity:
                return None
            ops.append((name, column, orjson.Fragment, None))
        else:
            ops.append((name, column, convert, None))
    return ops


def _write(ops: list[_Op], row: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, column, convert, nested in ops:
        value = row[column]
        if value is None:
            out[name] = None
        elif nested is not None:
            out[name] = _write(nested, row)
        else:
            out[name] = convert(value)  # type: ignore[misc]
    return out


class ReadModelSerializer(serializers.ModelSerializer):
    """An output ModelSerializer that introspects its model once per class, not per response.

    ModelSerializer rebuilds every field from the model's metadata each time it is instantiated,
    which costs more than serializing a version; the built fields depend on the class alone. For
    the same reason rows are written by a plan made once per class (`_plan`): attribute path and
    conversion per field, the same output as DRF's per-field calls at a fraction of their cost
    (list pages write thousands of fields).
    """

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.DateTimeField: UTCDateTimeField,
    }

    def get_fields(self) -> dict[str, serializers.Field]:
        cls = type(self)
        if cls not in _FIELDS:
            _FIELDS[cls] = super().get_fields()
        return copy.deepcopy(_FIELDS[cls])

    def to_representation(self, instance: Any) -> dict[str, Any]:
        steps = _plan(type(self))
        if steps is None or isinstance(instance, Mapping):
            return super().to_representation(instance)
        out: dict[str, Any] = {}
        for name, attrs, convert, field in steps:
            value = instance
            try:
                for attr in attrs:
                    value = getattr(value, attr)
            except Exception:
                value = _MISSING
            if value is _MISSING or callable(value):
                try:  # DRF's own rules: defaults, allow_null, SkipField, callables
                    value = field.get_attribute(instance)
                except SkipField:
                    continue
            out[name] = None if value is None else convert(value)
        return out

    @classmethod
    def write_rows(cls, rows: Rows) -> list[dict[str, Any]] | None:
        """What `cls(instances, many=True).data` gives for the instances of `rows`, written from
        the rows themselves (no instances, JSON fields never decoded and encoded again: they go
        out as orjson fragments, for clm_project.renderers.JSONRenderer); None if a field of
        `cls` has no column in them. tests/registry/test_row_writer.py holds the two to each
        other."""
        key = (cls, rows.layout)
        if key not in _WRITERS:
            _WRITERS[key] = _row_ops(cls, rows)
        ops = _WRITERS[key]
        if ops is None:
            return None
        return [_write(ops, row) for row in rows.rows]


_MISSING = object()


def _optional_choice(choices: list[tuple[str, str]]) -> serializers.ChoiceField:
    return serializers.ChoiceField(choices=choices, required=False, allow_blank=True)


# ---------------------------------------------------------------------------------------------
# Health and status


class CheckSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    detail = serializers.CharField()


class ProbeSerializer(CheckSerializer):
    age_s = serializers.FloatField(help_text="0: asked during this request.")
    seconds = serializers.FloatField(help_text="How long the asking took.")


class WorkersSerializer(CheckSerializer):
    count = serializers.IntegerField(help_text="Live workers consuming the training queue.")
    hostnames = serializers.ListField(child=serializers.CharField())
    age_s = serializers.FloatField(
        allow_null=True, help_text="Seconds since the freshest of them last said it is alive."
    )


class BeatSerializer(CheckSerializer):
    last_tick_at = UTCDateTimeField(allow_null=True)
    age_s = serializers.FloatField(allow_null=True, help_text="Seconds since beat last ticked.")


class HealthSerializer(serializers.Serializer):
    healthy = serializers.BooleanField()
    database = ProbeSerializer()
    broker = ProbeSerializer()
    workers = WorkersSerializer()
    beat = BeatSerializer()


# ---------------------------------------------------------------------------------------------
# Training jobs


class TrainingJobSerializer(ReadModelSerializer):
    model_id = serializers.CharField(source="model.model_id", read_only=True)
    version = serializers.IntegerField(source="version.version", read_only=True, allow_null=True)

    class Meta:
        model = TrainingJob
        fields = [
            "id", "model_id", "model_type", "symbol", "timeframe", "trigger_reason",
            "trigger_context", "joined_triggers", "params", "seed", "window_start", "window_end",
            "status", "progress", "step", "step_durations", "error_message", "error_step",
            "requested_by", "celery_task_id", "attempts", "version", "created_at", "started_at",
            "finished_at", "step_started_at", "heartbeat_at", "dispatched_at", "redispatches",
            "queued_after",
        ]  # fmt: skip
        read_only_fields = fields


class TrainResponseSerializer(TrainingJobSerializer):
    created = serializers.BooleanField(
        read_only=True,
        help_text="False when the request joined the model's active job (or, with "
        "if_active=queue, the waiting job of the same recipe).",
    )

    class Meta(TrainingJobSerializer.Meta):
        fields = [*TrainingJobSerializer.Meta.fields, "created"]
        read_only_fields = fields


class TrainInputSerializer(serializers.Serializer):
    model_type = serializers.ChoiceField(choices=ModelType.choices)
    symbol = serializers.RegexField(
        SYMBOL_PATTERN,
        max_length=32,
        error_messages={"invalid": "Use 1-32 letters, digits, '-' or '_' (e.g. BTCUSDT)."},
    )
    timeframe = serializers.ChoiceField(choices=Timeframe.choices)
    trigger_reason = serializers.ChoiceField(
        choices=TriggerReason.choices, default=TriggerReason.MANUAL
    )
    trigger_context = JSONObjectField(default=dict)
    params = JSONObjectField(default=dict)
    seed = serializers.IntegerField(min_value=0, max_value=MAX_INT32, default=0)
    window_start = serializers.DateTimeField(allow_null=True, default=None)
    window_end = serializers.DateTimeField(allow_null=True, default=None)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        start, end = attrs["window_start"], attrs["window_end"]
        if start and end and start >= end:
            raise serializers.ValidationError({"window_start": ["Must be before window_end."]})
        symbol, timeframe = attrs["symbol"].upper(), attrs["timeframe"]
        if not import_string(settings.CLM_DATA_AVAILABLE)(symbol=symbol, timeframe=timeframe):
            raise serializers.ValidationError(
                {"symbol": [f"No market data for {symbol} {timeframe}; import bars first."]}
            )
        return {**attrs, "symbol": symbol}


class JobQuerySerializer(serializers.Serializer):
    model_id = serializers.CharField(required=False, allow_blank=True, max_length=120)
    status = _optional_choice(JobStatus.choices)
    model_type = _optional_choice(ModelType.choices)
    symbol = serializers.CharField(required=False, allow_blank=True, max_length=32)


# ---------------------------------------------------------------------------------------------
# Evaluations


EVALUATION_FIELDS = [
    "id", "window_start", "window_end", "n_bars", "fee", "periods_per_year", "n_trials",
    "sharpe", "sortino", "max_drawdown", "total_return", "cagr", "calmar", "exposure", "trades",
    "win_rate", "profit_factor", "profit_factor_infinite", "avg_trade_return", "avg_bars_held",
    "psr", "dsr", "benchmark_sharpe", "gates", "regime_slices", "passed", "created_at",
]  # fmt: skip


# The API carries fractions (METRICS.md); the admin and the pictures show them as percentages.
FRACTION_HELP = {
    name: {"help_text": f"{what} as a fraction: {example} is {percent}."}
    for name, what, example, percent in (
        ("max_drawdown", "Largest fall from a peak of equity", "0.15", "15 %"),
        ("total_return", "Return over the window", "0.35", "35 %"),
        ("cagr", "Annualized return (CAGR)", "0.41", "41 %"),
        ("exposure", "Share of bars in a position", "0.6", "60 %"),
        ("win_rate", "Share of winning trades", "0.56", "56 %"),
        ("avg_trade_return", "Average trade return", "0.004", "0.4 %"),
        ("psr", "Probabilistic Sharpe ratio (PSR), a probability", "0.97", "97 %"),
        ("dsr", "Deflated Sharpe ratio (DSR), a probability", "0.91", "91 %"),
        ("fee", "Cost per unit of turnover", "0.0005", "0.05 % (5 bps)"),
    )
}


class EvaluationSerializer(ReadModelSerializer):
    """An evaluation nested under its version."""

    class Meta:
        model = EvaluationResult
        fields = EVALUATION_FIELDS
        read_only_fields = fields
        extra_kwargs = FRACTION_HELP


class EvaluationListSerializer(EvaluationSerializer):
    """An evaluation on its own, naming its model and version."""

    model_id = serializers.CharField(source="version.model.model_id", read_only=True)
    version = serializers.IntegerField(source="version.version", read_only=True)

    class Meta(EvaluationSerializer.Meta):
        fields = ["model_id", "version", *EVALUATION_FIELDS]
        read_only_fields = fields


class EvaluationQuerySerializer(serializers.Serializer):
    model_id = serializers.CharField(required=False, allow_blank=True, max_length=120)
    version = serializers.IntegerField(required=False, min_value=1, max_value=MAX_INT32)
    passed = serializers.BooleanField(allow_null=True, default=None)


# ---------------------------------------------------------------------------------------------
# Versions


class ModelVersionSerializer(ReadModelSerializer):
    model_id = serializers.CharField(source="model.model_id", read_only=True)
    model_type = serializers.CharField(source="model.model_type", read_only=True)
    symbol = serializers.CharField(source="model.symbol", read_only=True)
    timeframe = serializers.CharField(source="model.timeframe", read_only=True)
    # Joined by registry.selectors.with_latest_evaluation; built once per response, not per row.
    latest_evaluation = EvaluationSerializer(read_only=True, allow_null=True)

    class Meta:
        model = ModelVersion
        fields = [
            "model_id", "model_type", "symbol", "timeframe", "version", "status",
            "artifact_path", "artifact_sha256", "artifact_size", "params", "feature_spec",
            "training_metrics", "manifest", "train_start", "train_end", "failed_gates",
            "description", "tags", "notes", "created_at", "promoted_at", "retired_at",
            "latest_evaluation",
        ]  # fmt: skip
        read_only_fields = fields


class ModelQuerySerializer(serializers.Serializer):
    """The original ModelQuery as query parameters (paging is `limit` and `offset`)."""

    model_id = serializers.CharField(required=False, allow_blank=True, max_length=120)
    model_type = _optional_choice(ModelType.choices)
    status = _optional_choice(ModelStatus.choices)
    symbol = serializers.CharField(required=False, allow_blank=True, max_length=32)
    timeframe = _optional_choice(Timeframe.choices)
    min_sharpe = FiniteFloatField(required=False)
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)
    ordering = serializers.ChoiceField(choices=list(ORDERINGS), default="-created_at")


class VersionStatusQuerySerializer(serializers.Serializer):
    status = _optional_choice(ModelStatus.choices)


class ProductionQuerySerializer(serializers.Serializer):
    at = serializers.DateTimeField(
        required=False, help_text="ISO 8601 time: the version that was live then (from the audit)."
    )


class LifecycleEventSerializer(ReadModelSerializer):
    model_id = serializers.CharField(source="model.model_id", read_only=True)
    version = serializers.IntegerField(source="version.version", read_only=True)
    from_status = serializers.CharField(
        read_only=True, allow_blank=True, help_text="A version status; blank for a registration."
    )

    class Meta:
        model = LifecycleEvent
        fields = [
            "id", "model_id", "version", "action", "from_status", "to_status", "actor", "reason",
            "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class PromoteInputSerializer(serializers.Serializer):
    model_id = serializers.CharField(max_length=120)
    version = serializers.IntegerField(min_value=1, max_value=MAX_INT32)
    reason = serializers.CharField(max_length=2000, allow_blank=True, default="")


class RollbackInputSerializer(serializers.Serializer):
    model_id = serializers.CharField(max_length=120)
    target_version = serializers.IntegerField(
        min_value=1, max_value=MAX_INT32, required=False, help_text="The original name of version."
    )
    version = serializers.IntegerField(
        min_value=1, max_value=MAX_INT32, required=False, help_text="As in POST /clm/promote."
    )
    reason = serializers.CharField(max_length=2000, allow_blank=True, default="")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """`version` (as promote names it) or `target_version` (the original contract), or both
        when they agree; the service gets `target_version`."""
        version = attrs.pop("version", None)
        target = attrs.get("target_version")
        if version is None and target is None:
            raise serializers.ValidationError({"target_version": ["This field is required."]})
        if version is not None and target is not None and version != target:
            raise serializers.ValidationError(
                {"version": [f"Differs from target_version {target}; send one of them."]}
            )
        return {**attrs, "target_version": target if target is not None else version}


class PromoteResponseSerializer(ModelVersionSerializer):
    changed = serializers.BooleanField(
        read_only=True, help_text="False: the version was already in production (nothing done)."
    )

    class Meta(ModelVersionSerializer.Meta):
        fields = [*ModelVersionSerializer.Meta.fields, "changed"]
        read_only_fields = fields


# ---------------------------------------------------------------------------------------------
# Status and events


class StatusSerializer(serializers.Serializer):
    jobs = serializers.DictField(child=serializers.IntegerField(), help_text="Jobs by status.")
    models = serializers.IntegerField(help_text="Registered models.")
    versions = serializers.DictField(
        child=serializers.IntegerField(), help_text="Versions by status."
    )
    production_versions = serializers.IntegerField()
    unpublished_events = serializers.IntegerField()
    latest_job = TrainingJobSerializer(allow_null=True)
    scheduler = serializers.JSONField(
        help_text="Last scan, next due models (get_next_training_times), jobs and triggers of "
        "the last 24 h, and the celery-beat entries."
    )


class OutboxEventSerializer(ReadModelSerializer):
    published = serializers.SerializerMethodField()

    class Meta:
        model = OutboxEvent
        fields = [
            "id", "event_type", "model_id", "payload", "created_at", "published", "published_at",
            "attempts", "last_error",
        ]  # fmt: skip
        read_only_fields = fields

    def get_published(self, obj: OutboxEvent) -> bool:
        return obj.published_at is not None


class EventQuerySerializer(serializers.Serializer):
    event_type = _optional_choice(EventType.choices)
    model_id = serializers.CharField(required=False, allow_blank=True, max_length=120)
    published = serializers.BooleanField(allow_null=True, default=None)
