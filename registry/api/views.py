"""HTTP adapters over registry services and selectors: validate, call, serialize. No logic here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from django.conf import settings
from django.db.models import QuerySet
from django.http import HttpResponse
from django.utils.module_loading import import_string
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from clm_project.api import (
    JSONRenderer,
    OctetStreamRenderer,
    Pagination,
    PictureView,
    SelectorListView,
    error_responses,
    validated,
)
from clm_project.compiled import Rows
from clm_project.exceptions import DomainError, NotFound
from clm_project.query import query_validated
from registry import selectors, services
from registry.api import serializers as s
from registry.api.permissions import CanDownloadArtifact, CanPromote, CanRequestTraining
from registry.artifacts import ArtifactError, artifact_load
from registry.status import clm_status, health_check

JOB_ID = OpenApiParameter("job_id", OpenApiTypes.UUID, OpenApiParameter.PATH)
_errors = error_responses("Unknown model, version or job.")


# ---------------------------------------------------------------------------------------------
# Health and status


class HealthView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        responses={200: s.HealthSerializer, 503: s.HealthSerializer},
        auth=[],
        summary="Database and broker reachability (200 while the database answers, else 503).",
    )
    def get(self, request: Request) -> Response:
        report = health_check()
        code = status.HTTP_200_OK if report["healthy"] else status.HTTP_503_SERVICE_UNAVAILABLE
        return Response(s.HealthSerializer(report).data, status=code)


class StatusView(APIView):
    @extend_schema(responses=s.StatusSerializer, summary="Jobs and versions by status.")
    def get(self, request: Request) -> Response:
        status = {
            **clm_status(),
            **{key: import_string(path)() for key, path in settings.CLM_STATUS_SECTIONS.items()},
        }
        return Response(s.StatusSerializer(status).data)


# ---------------------------------------------------------------------------------------------
# Training jobs


@extend_schema(parameters=[s.JobQuerySerializer])
class JobListView(SelectorListView):
    serializer_class = s.TrainingJobSerializer
    query_serializer_class = s.JobQuerySerializer

    def get_queryset(self) -> QuerySet:
        return selectors.training_job_list(**self.query_params())


class JobDetailView(APIView):
    @extend_schema(parameters=[JOB_ID], responses={200: s.TrainingJobSerializer, **_errors(404)})
    def get(self, request: Request, job_id: str) -> Response:
        return Response(s.TrainingJobSerializer(selectors.training_job_get(job_id=job_id)).data)


class JobCancelView(APIView):
    permission_classes = [IsAuthenticated, CanRequestTraining]

    @extend_schema(
        parameters=[JOB_ID],
        request=None,
        responses={200: s.TrainingJobSerializer, **_errors(404, 409)},
        summary="Cancel a pending or queued job.",
    )
    def post(self, request: Request, job_id: str) -> Response:
        job = selectors.training_job_get(job_id=job_id)
        services.training_job_cancel(job_id=job.pk, actor=request.user.get_username())
        return Response(s.TrainingJobSerializer(selectors.training_job_get(job_id=job.pk)).data)


# ---------------------------------------------------------------------------------------------
# Versions


def _versions_data(rows: Rows | None, instances: Callable[[], Any]) -> list[dict[str, Any]]:
    """Versions as ModelVersionSerializer writes them: from the rows where the read gave rows the
    serializer can write from, else from `instances()` (a list, or one version)."""
    data = None if rows is None else s.ModelVersionSerializer.write_rows(rows)
    if data is not None:
        return data
    found = instances()
    return list(
        s.ModelVersionSerializer(found if isinstance(found, list) else [found], many=True).data
    )


class VersionRows:
    """The versions of a ModelQuery as the paginator sees them: counted through
    selectors.model_versions_count (exact, kept per revision), a page read through
    selectors.model_versions_page_rows (compiled once per query shape) and written out as
    ModelVersionSerializer would."""

    def __init__(self, queryset: QuerySet, query: selectors.ModelQuery) -> None:
        self.queryset = queryset
        self.query = query

    def __getitem__(self, page: slice) -> list[dict[str, Any]]:
        offset, limit = page.start, page.stop - page.start
        return _versions_data(
            selectors.model_versions_page_rows(self.query, offset=offset, limit=limit),
            lambda: selectors.model_versions_page(self.query, offset=offset, limit=limit),
        )


class VersionPagination(Pagination):
    def get_count(self, queryset: Any) -> int:
        return selectors.model_versions_count(queryset.queryset)


class VersionListView(SelectorListView):
    pagination_class = VersionPagination
    serializer_class = s.ModelVersionSerializer

    def model_query(self) -> selectors.ModelQuery:
        raise NotImplementedError

    def get_queryset(self) -> QuerySet:
        return selectors.model_versions_query(self.model_query())

    def paginate_queryset(self, queryset: Any) -> list[Any] | None:
        # The paginator only counts (VersionPagination.get_count) and slices what it is given.
        rows = cast(Any, VersionRows(queryset, self.model_query()))
        return super().paginate_queryset(rows)

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        self.query_params()  # an unknown parameter is a 400
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(page)  # written already (VersionRows)


@extend_schema(parameters=[s.ModelQuerySerializer], summary="Query versions (the ModelQuery).")
class ModelVersionListView(VersionListView):
    query_serializer_class = s.ModelQuerySerializer

    def model_query(self) -> selectors.ModelQuery:
        given = {
            key: value for key, value in self.query_params().items() if value not in ("", None)
        }
        return selectors.ModelQuery(**given)


@extend_schema(parameters=[s.VersionStatusQuerySerializer], summary="The versions of one model.")
class ModelVersionsOfModelView(VersionListView):
    query_serializer_class = s.VersionStatusQuerySerializer

    def model_query(self) -> selectors.ModelQuery:
        return selectors.ModelQuery(
            model_id=self.kwargs["model_id"],
            status=self.query_params().get("status"),
            ordering="-version",
        )

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = super().list(request, *args, **kwargs)
        if not cast(Any, self.paginator).count:  # no version: is there such a model at all?
            selectors.registered_model_get(model_id=self.kwargs["model_id"])  # else a 404
        return response


class ModelVersionDetailView(APIView):
    @extend_schema(responses={200: s.ModelVersionSerializer, **_errors(404)})
    def get(self, request: Request, model_id: str, version: int) -> Response:
        found = _versions_data(
            selectors.model_version_rows(model_id=model_id, version=version),
            lambda: selectors.model_version_get(model_id=model_id, version=version),
        )
        return Response(found[0])


@extend_schema(summary="The lifecycle audit of one version, newest first.")
class ModelVersionAuditView(SelectorListView):
    serializer_class = s.LifecycleEventSerializer

    def get_queryset(self) -> QuerySet:
        return selectors.lifecycle_events_list(
            model_id=self.kwargs["model_id"], version=self.kwargs["version"]
        )


class ProductionView(APIView):
    @extend_schema(
        parameters=[s.ProductionQuerySerializer],
        responses={200: s.ModelVersionSerializer, **_errors(400, 404)},
        summary="The live version (what a trading service polls), or the one live at `at`.",
    )
    def get(self, request: Request, model_id: str) -> Response:
        at = query_validated(s.ProductionQuerySerializer, request.query_params).get("at")
        if at is None:
            written = _versions_data(
                selectors.production_version_rows(model_id=model_id),
                lambda: selectors.production_version_get(model_id=model_id),
            )
            return Response(written[0])
        selectors.registered_model_get(model_id=model_id)
        live = selectors.production_version_at(model_id=model_id, at=at)
        if live is None:
            raise NotFound(f"model {model_id!r} had no production version at {at.isoformat()}")
        found = selectors.model_version_get(model_id=model_id, version=live.version)
        return Response(s.ModelVersionSerializer(found).data)


class ArtifactView(APIView):
    permission_classes = [IsAuthenticated, CanDownloadArtifact]
    renderer_classes = [JSONRenderer, OctetStreamRenderer]

    @extend_schema(
        responses={
            (200, "application/octet-stream"): OpenApiTypes.BINARY,
            **_errors(404, 409),
        },
        summary="Download the version's artifact; its sha256 is verified first (409 if it fails).",
    )
    def get(self, request: Request, model_id: str, version: int) -> HttpResponse:
        found = selectors.model_version_get(model_id=model_id, version=version)
        if not found.artifact_path:
            raise NotFound(f"{model_id} v{version} has no artifact")
        try:
            blob = artifact_load(path=found.artifact_path, sha256=found.artifact_sha256)
        except ArtifactError as exc:
            raise DomainError(str(exc)) from exc
        response = HttpResponse(blob, content_type="application/octet-stream")
        response["Content-Disposition"] = f'attachment; filename="{model_id}-v{version}.clm"'
        response["X-Content-SHA256"] = found.artifact_sha256
        return response


class PromoteView(APIView):
    permission_classes = [IsAuthenticated, CanPromote]

    @extend_schema(
        request=s.PromoteInputSerializer,
        responses={200: s.PromoteResponseSerializer, **_errors(400, 404, 409)},
        summary="Make a version the production version; the previous one is retired. Promoting "
        "the production version again is a 200 with changed=false (safe to retry).",
    )
    def post(self, request: Request) -> Response:
        data = validated(s.PromoteInputSerializer, request.data)
        # The service answers with the row it locked (and wrote): no read before or after.
        current, changed = services.model_version_promote_idempotent(
            **data, actor=request.user.get_username()
        )
        return Response({**s.ModelVersionSerializer(current).data, "changed": changed})


class RollbackView(APIView):
    permission_classes = [IsAuthenticated, CanPromote]

    @extend_schema(
        request=s.RollbackInputSerializer,
        responses={200: s.ModelVersionSerializer, **_errors(400, 404, 409)},
        summary="Put an earlier, proven version back in production.",
    )
    def post(self, request: Request) -> Response:
        data = validated(s.RollbackInputSerializer, request.data)
        services.model_version_rollback(**data, actor=request.user.get_username())
        found = selectors.model_version_get(
            model_id=data["model_id"], version=data["target_version"]
        )
        return Response(s.ModelVersionSerializer(found).data)


# ---------------------------------------------------------------------------------------------
# Evaluations and events


@extend_schema(parameters=[s.EvaluationQuerySerializer])
class EvaluationListView(SelectorListView):
    serializer_class = s.EvaluationListSerializer
    query_serializer_class = s.EvaluationQuerySerializer

    def get_queryset(self) -> QuerySet:
        return selectors.evaluations_list(**self.query_params())


@extend_schema(parameters=[s.EventQuerySerializer], summary="The event outbox, newest first.")
class EventListView(SelectorListView):
    serializer_class = s.OutboxEventSerializer
    query_serializer_class = s.EventQuerySerializer

    def get_queryset(self) -> QuerySet:
        return selectors.outbox_events_list(**self.query_params())


# ---------------------------------------------------------------------------------------------
# Pictures


def _png_response(blob: bytes, filename: str) -> HttpResponse:
    response = HttpResponse(blob, content_type="image/png")
    response["Content-Disposition"] = f'inline; filename="{filename}"'
    return response


EQUITY_PNG: dict[Any, Any] = {(200, "image/png"): OpenApiTypes.BINARY, **_errors(404)}


class EvaluationEquityCurveView(PictureView):
    @extend_schema(
        responses=EQUITY_PNG,
        summary="The evaluation's equity curve against buy and hold, drawdown below (PNG).",
    )
    def get(self, request: Request, evaluation_id: int) -> HttpResponse:
        evaluation = selectors.evaluation_get(evaluation_id=evaluation_id)
        blob = services.equity_curve_png_ensure(evaluation=evaluation)
        version = evaluation.version
        return _png_response(
            blob, f"{version.model.model_id}-v{version.version}-evaluation-{evaluation.pk}.png"
        )


class ModelVersionEquityCurveView(PictureView):
    @extend_schema(
        responses=EQUITY_PNG,
        summary="The equity curve of the version's latest evaluation (PNG).",
    )
    def get(self, request: Request, model_id: str, version: int) -> HttpResponse:
        found = selectors.model_version_get(model_id=model_id, version=version)
        if found.latest_evaluation is None:
            raise NotFound(f"{model_id} v{version} has not been evaluated")
        blob = services.equity_curve_png_ensure(evaluation=found.latest_evaluation)
        return _png_response(blob, f"{model_id}-v{version}-equity.png")
