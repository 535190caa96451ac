"""GET /clm/models/{model_id} (the registered model as a resource) and .../compare."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from clm_project.query import query_validated
from registry.api.serializers import EvaluationSerializer, TrainingJobSerializer
from training.serving import overview as model_overview
from training.serving.api.views import SIGNAL_ERRORS


class ModelVersionSummarySerializer(serializers.Serializer):
    version = serializers.IntegerField()
    status = serializers.CharField()
    created_at = serializers.DateTimeField()
    artifact_sha256 = serializers.CharField()


class ScheduleSerializer(serializers.Serializer):
    enabled = serializers.BooleanField()
    interval_hours = serializers.IntegerField()
    priority = serializers.IntegerField()
    last_training_at = serializers.DateTimeField(allow_null=True)
    next_training_at = serializers.DateTimeField(allow_null=True)
    due = serializers.BooleanField()
    active_job = serializers.BooleanField()


class PoliciesSerializer(serializers.Serializer):
    retrain = serializers.DictField()
    promotion = serializers.DictField()
    shadow = serializers.DictField()
    rollback = serializers.DictField()


class RegisteredModelSerializer(serializers.Serializer):
    model_id = serializers.CharField(source="model.model_id")
    model_type = serializers.CharField(source="model.model_type")
    symbol = serializers.CharField(source="model.symbol")
    timeframe = serializers.CharField(source="model.timeframe")
    created_at = serializers.DateTimeField(source="model.created_at")
    production_version = ModelVersionSummarySerializer(source="production", allow_null=True)
    latest_version = ModelVersionSummarySerializer(source="latest", allow_null=True)
    versions_count = serializers.IntegerField()
    versions_by_status = serializers.DictField(child=serializers.IntegerField())
    policies = PoliciesSerializer(help_text="Retrain, promotion, shadow and rollback rules now.")
    last_job = TrainingJobSerializer(allow_null=True)
    next_training = ScheduleSerializer(source="schedule", allow_null=True)


class ModelDetailView(APIView):
    @extend_schema(
        responses={200: RegisteredModelSerializer, **SIGNAL_ERRORS},
        summary="The registered model: versions, production, policies, last job, next training.",
    )
    def get(self, request: Request, model_id: str) -> Response:
        query_validated(None, request.query_params)
        overview = model_overview.model_overview_get(model_id=model_id)
        return Response(RegisteredModelSerializer(overview).data)


class CompareQuerySerializer(serializers.Serializer):
    versions = serializers.RegexField(
        model_overview.VERSIONS_PATTERN,
        max_length=200,
        help_text="Comma-separated version numbers, e.g. 3,5 (1 to 10).",
    )


class ComparedVersionSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    status = serializers.CharField()
    created_at = serializers.DateTimeField()
    params = serializers.JSONField()
    evaluation = EvaluationSerializer(allow_null=True, help_text="The latest evaluation.")


class CommonWindowSerializer(serializers.Serializer):
    source_version = serializers.IntegerField(help_text="Whose evaluation window is used.")
    available = serializers.BooleanField()
    reason = serializers.CharField(required=False)
    window_start = serializers.DateTimeField(required=False)
    window_end = serializers.DateTimeField(required=False)
    n_bars = serializers.IntegerField(required=False)
    fee = serializers.FloatField(required=False)
    periods_per_year = serializers.IntegerField(required=False)
    scores = serializers.DictField(
        required=False,
        child=serializers.JSONField(),
        help_text="Backtest figures per version on the window (not deflated), or its error.",
    )


class ComparisonSerializer(serializers.Serializer):
    model_id = serializers.CharField(source="model.model_id")
    versions = serializers.SerializerMethodField()
    params_diff = serializers.JSONField()
    feature_spec_diff = serializers.JSONField()
    manifest_diff = serializers.JSONField()
    common_window = CommonWindowSerializer()

    @extend_schema_field(ComparedVersionSerializer(many=True))
    def get_versions(self, comparison: model_overview.Comparison) -> list[dict[str, Any]]:
        return ComparedVersionSerializer(
            [
                {
                    "version": v.version,
                    "status": v.status,
                    "created_at": v.created_at,
                    "params": v.params,
                    "evaluation": comparison.evaluations[v.version],
                }
                for v in comparison.versions
            ],
            many=True,
        ).data


class CompareView(APIView):
    @extend_schema(
        parameters=[CompareQuerySerializer],
        responses={200: ComparisonSerializer, **SIGNAL_ERRORS},
        summary="Versions side by side, and all scored on the latest one's evaluation window.",
    )
    def get(self, request: Request, model_id: str) -> Response:
        query = query_validated(CompareQuerySerializer, request.query_params)
        numbers = model_overview.parse_versions(query["versions"])
        comparison = model_overview.versions_compare(model_id=model_id, versions=numbers)
        return Response(ComparisonSerializer(comparison).data)
