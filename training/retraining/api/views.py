"""HTTP adapters over the trigger handlers, monitor results, trigger records and the schedule."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ParseError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import Serializer
from rest_framework.views import APIView

from clm_project.query import query_validated
from registry import selectors as registry_selectors
from registry.api.permissions import CanRequestTraining
from training.models import TriggerOutcome, TriggerSource
from training.retraining import events, scheduler, triggers
from training.retraining.api import serializers as s
from training.retraining.monitors import selectors as monitor_selectors
from training.retraining.triggers import Origin, TriggerResult

# Rejections that are the caller's mistake, and their HTTP status.
REJECTION_STATUS = {
    "invalid": status.HTTP_400_BAD_REQUEST,
    "unknown_event_type": status.HTTP_400_BAD_REQUEST,
    "unknown_model": status.HTTP_404_NOT_FOUND,
}


class Pagination(LimitOffsetPagination):
    max_limit = 500


def _validated(serializer_class: type[Serializer], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class ListView(generics.ListAPIView):
    """A paginated list from a selector called with validated query parameters."""

    filter_backends: list = []
    pagination_class = Pagination
    query_serializer_class: type[Serializer]

    def query_params(self) -> dict[str, Any]:
        return query_validated(self.query_serializer_class, self.request.query_params)


# ---------------------------------------------------------------------------------------------
# Incoming events


class EventView(APIView):
    """POST an event: 202 with what it caused for each model (a job, a join or a skip reason).

    Malformed events answer 400 and unknown models 404; both are recorded as rejected triggers.
    """

    permission_classes = [IsAuthenticated, CanRequestTraining]
    event_type: str

    def receive(self, request: Request) -> Response:
        origin = Origin(source=TriggerSource.API, requested_by=request.user.get_username())
        try:
            data = request.data
        except ParseError as exc:  # recorded like any malformed event, then answered 400
            triggers.trigger_rejected(
                origin=origin, event_type=self.event_type, code="invalid", text=str(exc.detail),
                payload={},
            )  # fmt: skip
            raise
        data = data.dict() if hasattr(data, "dict") else data
        if isinstance(data, dict):
            # The body's event_id, else the Idempotency-Key header: a repeat answers as the first.
            given = data.get("event_id") or request.headers.get("Idempotency-Key", "")
            origin = replace(origin, event_id=events.event_id_of(given))
        results = events.event_receive(event_type=self.event_type, data=data, origin=origin)
        if len(results) == 1 and results[0].outcome == TriggerOutcome.REJECTED:
            rejected = _rejection(results[0])
            if rejected is not None:
                return rejected
        body = {
            "event_type": self.event_type,
            "event_id": origin.event_id,
            "results": [_fresh(r) for r in results],
        }
        return Response(s.EventAcceptedSerializer(body).data, status=status.HTTP_202_ACCEPTED)


def _fresh(result: TriggerResult) -> TriggerResult:
    # Re-read the job: it was dispatched after commit, so it is queued now, not pending.
    if result.record.job_id is not None:
        result.record.job = registry_selectors.training_job_get(job_id=result.record.job_id)
    return result


def _rejection(result: TriggerResult) -> Response | None:
    record = result.record
    code = REJECTION_STATUS.get(record.code)
    if code is None:
        return None
    body: dict[str, Any] = {
        "detail": record.reason,
        "code": "not_found" if code == status.HTTP_404_NOT_FOUND else "invalid",
        "trigger_id": record.pk,
    }
    if "errors" in record.payload:
        body["errors"] = record.payload["errors"]
    return Response(body, status=code)


def _responses(*, with_404: bool) -> dict[int, Any]:
    responses: dict[int, Any] = {
        202: s.EventAcceptedSerializer,
        400: OpenApiResponse(s.EventRejectedSerializer, description="Malformed; recorded."),
    }
    if with_404:
        responses[404] = OpenApiResponse(s.EventRejectedSerializer, description="Unknown model.")
    return responses


class DriftDetectedView(EventView):
    event_type = "drift_detected"

    @extend_schema(
        request=s.DriftDetectedSerializer,
        responses=_responses(with_404=True),
        summary="Feature drift of a model: retrains it when the score reaches its threshold.",
    )
    def post(self, request: Request) -> Response:
        return self.receive(request)


class PerformanceDegradedView(EventView):
    event_type = "performance_degraded"

    @extend_schema(
        request=s.PerformanceDegradedSerializer,
        responses=_responses(with_404=True),
        summary="Live Sharpe of a model: retrains it when below its policy's threshold.",
    )
    def post(self, request: Request) -> Response:
        return self.receive(request)


class RegimeChangeView(EventView):
    event_type = "regime_change"

    @extend_schema(
        request=s.RegimeChangeSerializer,
        responses=_responses(with_404=False),
        summary="A market regime change: retrains the symbol's models, or the models named.",
    )
    def post(self, request: Request) -> Response:
        return self.receive(request)


class ManualTrainingView(EventView):
    event_type = "manual_training"

    @extend_schema(
        request=s.ManualTrainingSerializer,
        responses=_responses(with_404=False),
        summary="A training request, as POST /clm/train, recorded as a trigger.",
    )
    def post(self, request: Request) -> Response:
        return self.receive(request)


# ---------------------------------------------------------------------------------------------
# Records and results


@extend_schema(parameters=[s.TriggerQuerySerializer], summary="Every trigger and what it caused.")
class TriggerListView(ListView):
    serializer_class = s.TriggerRecordSerializer
    query_serializer_class = s.TriggerQuerySerializer

    def get_queryset(self) -> QuerySet:
        return triggers.trigger_records_list(**self.query_params())


@extend_schema(parameters=[s.MonitorQuerySerializer], summary="Drift reports, newest first.")
class DriftReportListView(ListView):
    serializer_class = s.DriftReportSerializer
    query_serializer_class = s.MonitorQuerySerializer

    def get_queryset(self) -> QuerySet:
        return monitor_selectors.drift_reports_list(**self.query_params())


@extend_schema(parameters=[s.MonitorQuerySerializer], summary="Live performance, newest first.")
class PerformanceReportListView(ListView):
    serializer_class = s.PerformanceReportSerializer
    query_serializer_class = s.MonitorQuerySerializer

    def get_queryset(self) -> QuerySet:
        return monitor_selectors.performance_reports_list(**self.query_params())


@extend_schema(parameters=[s.RegimeQuerySerializer], summary="Regime readings, newest first.")
class RegimeStateListView(ListView):
    serializer_class = s.RegimeStateSerializer
    query_serializer_class = s.RegimeQuerySerializer

    def get_queryset(self) -> QuerySet:
        return monitor_selectors.regime_states_list(**self.query_params())


@extend_schema(
    parameters=[s.ScheduleQuerySerializer],
    summary="Next periodic training per model, soonest first (get_next_training_times).",
)
class ScheduleView(ListView):
    serializer_class = s.ScheduleEntrySerializer
    query_serializer_class = s.ScheduleQuerySerializer

    def get_queryset(self) -> list:
        params = self.query_params()
        entries = scheduler.get_next_training_times(model_type=params.get("model_type") or None)
        if params.get("due") is not None:
            entries = [e for e in entries if e.due == params["due"]]
        return entries
