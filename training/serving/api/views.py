"""Signals and predictions over HTTP: what a trading service asks CLM for a position."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from clm_project.query import query_validated
from registry.api.serializers import ErrorSerializer
from training.data.bars import as_datetime
from training.serving import services as serving


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


VERSION_HELP = "Any version that has not failed (default: production)."
SIGNAL_ERRORS = {
    400: _error("Unknown or invalid query parameters, with field messages."),
    401: _error("No credentials."),
    404: _error("Unknown model or version, no production version, or no bars."),
    409: _error("The version failed, or its artifact cannot be served."),
}


class SignalQuerySerializer(serializers.Serializer):
    version = serializers.IntegerField(required=False, min_value=1, help_text=VERSION_HELP)
    at = serializers.DateTimeField(
        required=False,
        help_text="ISO 8601 time: the latest bar at or before it, and the version live then.",
    )


class ArmSignalSerializer(serializers.Serializer):
    experiment_id = serializers.IntegerField()
    version = serializers.IntegerField()
    role = serializers.CharField()
    status = serializers.CharField()
    weight = serializers.FloatField()
    artifact_sha256 = serializers.CharField()
    position = serializers.FloatField()


class FeaturesFreshnessSerializer(serializers.Serializer):
    bar_timestamp = serializers.DateTimeField()
    bar_age_seconds = serializers.FloatField()
    fresh = serializers.BooleanField(
        help_text="The bar is at most two bar lengths old (the series is being updated)."
    )
    bars_used = serializers.IntegerField(help_text="Bars the features and position path read.")


class SignalSerializer(serializers.Serializer):
    model_id = serializers.CharField()
    version = serializers.IntegerField()
    status = serializers.CharField()
    artifact_sha256 = serializers.CharField()
    position = serializers.FloatField(help_text="Target position in [-1, 1] for the bar.")
    bar_timestamp = serializers.DateTimeField()
    close = serializers.FloatField()
    features = FeaturesFreshnessSerializer()
    computed_at = serializers.DateTimeField()
    allocation = ArmSignalSerializer(
        many=True,
        allow_null=True,
        help_text="A running A/B experiment's arms with their weights and positions; null without.",
    )


def _signal_body(signal: serving.Signal) -> dict[str, Any]:
    return {
        "model_id": signal.model_id,
        "version": signal.version,
        "status": signal.status,
        "artifact_sha256": signal.artifact_sha256,
        "position": signal.position,
        "bar_timestamp": signal.bar_timestamp,
        "close": signal.close,
        "features": {
            "bar_timestamp": signal.bar_timestamp,
            "bar_age_seconds": signal.bar_age_seconds,
            "fresh": signal.fresh,
            "bars_used": signal.bars_used,
        },
        "computed_at": signal.computed_at,
        "allocation": signal.allocation,
    }


class SignalView(APIView):
    @extend_schema(
        parameters=[SignalQuerySerializer],
        responses={200: SignalSerializer, **SIGNAL_ERRORS},
        summary="The production version's target position for the latest stored bar.",
    )
    def get(self, request: Request, model_id: str) -> Response:
        query = query_validated(SignalQuerySerializer, request.query_params)
        signal = serving.signal_get(model_id=model_id, **query)
        return Response(SignalSerializer(_signal_body(signal)).data)


class BarInputSerializer(serializers.Serializer):
    """Documents one bar; the rows are checked by training.serving.bars_from_rows."""

    timestamp = serializers.DateTimeField()
    open = serializers.FloatField()
    high = serializers.FloatField()
    low = serializers.FloatField()
    close = serializers.FloatField()
    volume = serializers.FloatField()


class BarRowsField(serializers.ListField):
    """A list of JSON objects, passed on unparsed: bar checks happen in one place."""

    child = serializers.DictField()

    def to_internal_value(self, data: Any) -> list[dict[str, Any]]:
        return list(super().to_internal_value(data))


class PredictInputSerializer(serializers.Serializer):
    bars = BarRowsField(
        max_length=serving.MAX_PREDICT_BARS,
        help_text="Bars oldest first (any order is sorted), the same checks as bar import.",
    )
    version = serializers.IntegerField(required=False, min_value=1, help_text=VERSION_HELP)


class PredictInputDocSerializer(serializers.Serializer):
    bars = BarInputSerializer(many=True)
    version = serializers.IntegerField(required=False, min_value=1)


class PositionSerializer(serializers.Serializer):
    timestamp = serializers.DateTimeField()
    position = serializers.FloatField()


class PredictionSerializer(serializers.Serializer):
    model_id = serializers.CharField()
    version = serializers.IntegerField()
    artifact_sha256 = serializers.CharField()
    warmup_bars = serializers.IntegerField(
        help_text="Bars of history before the first position that can be non-flat."
    )
    positions = PositionSerializer(many=True)


class PredictView(APIView):
    @extend_schema(
        request=PredictInputDocSerializer,
        responses={200: PredictionSerializer, **SIGNAL_ERRORS},
        summary="Positions for bars sent in the body (for services that keep their own data).",
    )
    def post(self, request: Request, model_id: str) -> Response:
        serializer = PredictInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        prediction = serving.predict(
            model_id=model_id, rows=data["bars"], version=data.get("version")
        )
        body = {
            "model_id": prediction.model_id,
            "version": prediction.version,
            "artifact_sha256": prediction.artifact_sha256,
            "warmup_bars": prediction.warmup_bars,
            "positions": [
                {"timestamp": as_datetime(moment), "position": float(position)}
                for moment, position in zip(
                    prediction.timestamps, prediction.positions, strict=True
                )
            ],
        }
        return Response(PredictionSerializer(body).data)
