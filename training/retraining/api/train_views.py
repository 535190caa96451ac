"""POST /clm/train: a manual training request through the trigger handlers, like every other door.

Checked before any job exists (params, feature spec, bars: 400; an active job with another recipe:
409), recorded as a trigger, answered 202 with a Location header. An `Idempotency-Key` header makes
retries safe: a key seen before returns the first answer and does nothing else.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from clm_project.api import ErrorSerializer
from clm_project.exceptions import InvalidInput
from clm_project.query import query_validated
from registry import selectors as registry_selectors
from registry.api import serializers as rs
from registry.api.permissions import CanRequestTraining
from registry.models import RegisteredModel, TriggerReason
from registry.services import IF_ACTIVE_CHOICES
from training.models import TriggerOutcome, TriggerSource
from training.retraining import triggers
from training.retraining.requests import active_job_conflict, training_request_check
from training.retraining.triggers import Origin, TriggerResult

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 64
IDEMPOTENCY_KEY = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="Your id for this request (at most 64 characters): a repeat returns the first "
    "answer and does nothing.",
)


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


IF_ACTIVE = OpenApiParameter(
    "if_active",
    OpenApiTypes.STR,
    OpenApiParameter.QUERY,
    enum=list(IF_ACTIVE_CHOICES),
    description="As the body field `if_active` (the body wins when both are given).",
)


class TrainQuerySerializer(serializers.Serializer):
    if_active = serializers.ChoiceField(choices=[(c, c) for c in IF_ACTIVE_CHOICES], required=False)


TRAIN_ERRORS = {
    400: _error("Invalid input: fields, trainer params, feature spec, too few bars."),
    401: _error("No credentials."),
    403: _error("No permission to request training."),
    409: _error(
        "The model's active job trains other params or seed (named in active_job); send "
        "if_active=queue to train after it."
    ),
}


def idempotency_key(request: Request) -> str:
    """The request's Idempotency-Key header ('' without one); over 64 characters is a 400."""
    key = request.headers.get(IDEMPOTENCY_HEADER, "").strip()
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(
            f"{IDEMPOTENCY_HEADER} is at most {MAX_KEY_LENGTH} characters", field=IDEMPOTENCY_HEADER
        )
    return key


def accepted(request: Request, result: TriggerResult) -> Response:
    """202 with the job (re-read: it was dispatched after commit) and where to follow it."""
    job = registry_selectors.training_job_get(job_id=result.record.job_id)
    created = result.outcome == TriggerOutcome.CREATED
    body = {**rs.TrainingJobSerializer(job).data, "created": created}
    response = Response(body, status=status.HTTP_202_ACCEPTED)
    response["Location"] = request.build_absolute_uri(f"/clm/jobs/{job.pk}")
    return response


class ManualTrainInputSerializer(rs.TrainInputSerializer):
    if_active = serializers.ChoiceField(
        choices=[(c, c) for c in IF_ACTIVE_CHOICES],
        default="join",
        help_text="When the model has an active job: `join` it (same params and seed only; "
        "otherwise 409), or `queue` a job that waits (status `waiting`) and starts when the "
        "active one ends. Also accepted as the query parameter `?if_active=`.",
    )
    trigger_reason = serializers.ChoiceField(
        choices=[(TriggerReason.MANUAL, "manual")],
        default=TriggerReason.MANUAL,
        error_messages={
            "invalid_choice": "POST /clm/train takes trigger_reason manual only; the other "
            "reasons come through their event endpoints (/clm/events/...)."
        },
    )


class TrainView(APIView):
    permission_classes = [IsAuthenticated, CanRequestTraining]

    @extend_schema(
        request=ManualTrainInputSerializer,
        parameters=[IDEMPOTENCY_KEY, IF_ACTIVE],
        responses={202: rs.TrainResponseSerializer, **TRAIN_ERRORS},
        summary="Request training; joins the model's active job when it trains the same recipe.",
    )
    def post(self, request: Request) -> Response:
        key = idempotency_key(request)
        if key:
            first = [r for r in triggers.trigger_results_for_event(event_id=key) if r.job]
            if first:
                return accepted(request, first[0])
        query = query_validated(TrainQuerySerializer, request.query_params)
        body = request.data
        if "if_active" in query and hasattr(body, "get") and "if_active" not in body:
            body = {**body, "if_active": query["if_active"]}
        serializer = ManualTrainInputSerializer(data=body)
        serializer.is_valid(raise_exception=True)
        data: dict[str, Any] = dict(serializer.validated_data)
        recipe = {k: data[k] for k in ("params", "seed", "window_start", "window_end")}
        training_request_check(
            model_type=data["model_type"], symbol=data["symbol"], timeframe=data["timeframe"],
            **recipe,
        )  # fmt: skip
        model_id = RegisteredModel.make_model_id(
            data["model_type"], data["symbol"], data["timeframe"]
        )
        active_job_conflict(
            model_id=model_id, params=data["params"], seed=data["seed"],
            if_active=data["if_active"],
        )  # fmt: skip
        origin = Origin(
            source=TriggerSource.API,
            event_id=key,
            requested_by=request.user.get_username(),
            context=data["trigger_context"],
        )
        result = triggers.trigger_training(
            model_type=data["model_type"], symbol=data["symbol"], timeframe=data["timeframe"],
            trigger_reason=TriggerReason.MANUAL, origin=origin, if_active=data["if_active"],
            **recipe,
        )  # fmt: skip
        if result.job is None:
            raise InvalidInput(result.record.reason)
        return accepted(request, result)
