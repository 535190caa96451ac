"""HTTP adapters over shadow testing, experiments and automatic rollback (training.promotion:
shadow, experiments, rollback): validate, call, serialize. Reads need an authenticated user;
every write needs registry.promote_modelversion."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from clm_project.exceptions import NotFound
from registry.api.permissions import CanPromote
from registry.api.views import PictureView, RegistryListView, _errors, _validated
from training.evaluation.plots import shadow_curve_png
from training.promotion import experiments, rollback, shadow
from training.promotion.api import serializers as s


class WritesNeedPromote(BasePermission):
    """GET for any authenticated user, POST for holders of registry.promote_modelversion."""

    message = CanPromote.message

    def has_permission(self, request: Request, view: APIView) -> bool:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return True
        return CanPromote().has_permission(request, view)


class LifecycleListView(RegistryListView):
    permission_classes = [IsAuthenticated, WritesNeedPromote]


class CommandView(APIView):
    permission_classes = [IsAuthenticated, CanPromote]


# ---------------------------------------------------------------------------------------------
# Shadow comparisons


@extend_schema_view(
    get=extend_schema(
        parameters=[s.ShadowQuerySerializer], summary="Shadow comparisons, newest first."
    )
)
class ShadowListView(LifecycleListView):
    """Shadow comparisons: list them (filtered), or start one."""

    serializer_class = s.ShadowComparisonSerializer
    query_serializer_class = s.ShadowQuerySerializer

    def get_queryset(self) -> QuerySet:
        given = {k: v for k, v in self.query_params().items() if v not in ("", None)}
        return shadow.shadow_comparisons_list(**given)

    @extend_schema(
        request=s.ShadowStartInputSerializer,
        responses={201: s.ShadowComparisonSerializer, **_errors(400, 404, 409)},
        summary="Start shadowing a version (candidate or shadow) against production.",
    )
    def post(self, request: Request) -> Response:
        data = _validated(s.ShadowStartInputSerializer, request.data)
        comparison = shadow.shadow_start(**data, actor=request.user.get_username())
        found = shadow.shadow_comparison_get(comparison_id=comparison.pk)
        return Response(
            s.ShadowComparisonSerializer(found, context={"request": request}).data,
            status=status.HTTP_201_CREATED,
        )


class ShadowDetailView(APIView):
    @extend_schema(
        responses={200: s.ShadowComparisonDetailSerializer, **_errors(404)},
        summary="A comparison with every evaluation step's test, decision and reason.",
    )
    def get(self, request: Request, comparison_id: int) -> Response:
        found = shadow.shadow_comparison_get(comparison_id=comparison_id)
        return Response(
            s.ShadowComparisonDetailSerializer(found, context={"request": request}).data
        )


class ShadowStopView(CommandView):
    @extend_schema(
        request=s.StopInputSerializer,
        responses={200: s.ShadowComparisonSerializer, **_errors(400, 404, 409)},
        summary="Stop an active comparison; the version goes back to candidate.",
    )
    def post(self, request: Request, comparison_id: int) -> Response:
        data = _validated(s.StopInputSerializer, request.data)
        shadow.shadow_stop(
            comparison_id=comparison_id, actor=request.user.get_username(), reason=data["reason"]
        )
        found = shadow.shadow_comparison_get(comparison_id=comparison_id)
        return Response(s.ShadowComparisonSerializer(found, context={"request": request}).data)


class ShadowCurveView(PictureView):
    @extend_schema(
        responses={(200, "image/png"): OpenApiTypes.BINARY, **_errors(404)},
        summary="Shadow against production equity on the shadow period's bars (PNG).",
    )
    def get(self, request: Request, comparison_id: int) -> HttpResponse:
        comparison = shadow.shadow_comparison_get(comparison_id=comparison_id)
        series = shadow.shadow_series(comparison)
        if len(series.shadow) < 2:
            raise NotFound(f"shadow comparison {comparison_id} has no bars yet")
        stat = (
            f"DM statistic {comparison.statistic:.2f}, p = {comparison.p_value:.3f}"
            if comparison.statistic is not None
            else "not tested yet"
        )
        blob = shadow_curve_png(
            timestamps=series.timestamps,
            shadow_returns=series.shadow,
            production_returns=series.production,
            shadow_label=f"shadow v{comparison.shadow.version}",
            production_label=f"production v{comparison.production.version}",
            title=f"{comparison.model.model_id}: shadow comparison {comparison.pk} over "
            f"{len(series.shadow)} bars ({stat})",
        )
        response = HttpResponse(blob, content_type="image/png")
        response["Content-Disposition"] = f'inline; filename="shadow-{comparison.pk}.png"'
        return response


# ---------------------------------------------------------------------------------------------
# Experiments


@extend_schema_view(
    get=extend_schema(
        parameters=[s.ExperimentQuerySerializer], summary="A/B experiments, newest first."
    )
)
class ExperimentListView(LifecycleListView):
    """A/B experiments: list them (filtered), or start one."""

    serializer_class = s.ExperimentSerializer
    query_serializer_class = s.ExperimentQuerySerializer

    def get_queryset(self) -> QuerySet:
        given = {k: v for k, v in self.query_params().items() if v not in ("", None)}
        return experiments.experiments_list(**given)

    @extend_schema(
        request=s.ExperimentStartInputSerializer,
        responses={201: s.ExperimentSerializer, **_errors(400, 404, 409)},
        summary="Start an experiment: production and candidates with capital weights summing to 1.",
    )
    def post(self, request: Request) -> Response:
        data = _validated(s.ExperimentStartInputSerializer, request.data)
        arms = [experiments.ArmRequest(**arm) for arm in data.pop("arms")]
        experiment = experiments.experiment_start(
            **data, arms=arms, actor=request.user.get_username()
        )
        found = experiments.experiment_get(experiment_id=experiment.pk)
        return Response(s.ExperimentSerializer(found).data, status=status.HTTP_201_CREATED)


class ExperimentDetailView(APIView):
    @extend_schema(
        responses={200: s.ExperimentDetailSerializer, **_errors(404)},
        summary="An experiment with its arms and every evaluation step.",
    )
    def get(self, request: Request, experiment_id: int) -> Response:
        found = experiments.experiment_get(experiment_id=experiment_id)
        return Response(s.ExperimentDetailSerializer(found).data)


class ExperimentStopView(CommandView):
    @extend_schema(
        request=s.StopInputSerializer,
        responses={200: s.ExperimentSerializer, **_errors(400, 404, 409)},
        summary="Stop a running experiment; nothing is promoted.",
    )
    def post(self, request: Request, experiment_id: int) -> Response:
        data = _validated(s.StopInputSerializer, request.data)
        experiments.experiment_stop(
            experiment_id=experiment_id, actor=request.user.get_username(), reason=data["reason"]
        )
        found = experiments.experiment_get(experiment_id=experiment_id)
        return Response(s.ExperimentSerializer(found).data)


class AllocationView(APIView):
    @extend_schema(
        responses={200: s.AllocationSerializer, **_errors(404)},
        summary="How to split the model's capital now: the running experiment's arms, or all "
        "on production.",
    )
    def get(self, request: Request, model_id: str) -> Response:
        return Response(s.AllocationSerializer(experiments.allocation_get(model_id=model_id)).data)


class ResultsView(CommandView):
    @extend_schema(
        request=s.ResultsInputSerializer,
        responses={200: s.ResultsResponseSerializer, **_errors(400, 404, 409)},
        summary="Report realised per-bar returns of production and experiment arms (all or "
        "none stored; a bar reported again is replaced).",
    )
    def post(self, request: Request, model_id: str) -> Response:
        data = _validated(s.ResultsInputSerializer, request.data)
        rows = [
            experiments.ResultRow(
                version=row["version"], timestamp=row["timestamp"], value=row["return"]
            )
            for row in data["results"]
        ]
        stored, experiment = experiments.results_record(
            model_id=model_id,
            rows=rows,
            actor=request.user.get_username(),
            experiment_id=data.get("experiment"),
        )
        body = {
            "model_id": model_id,
            "experiment_id": experiment.pk if experiment is not None else None,
            "stored": stored,
        }
        return Response(s.ResultsResponseSerializer(body).data)


# ---------------------------------------------------------------------------------------------
# Rollbacks


@extend_schema(
    parameters=[s.RollbackQuerySerializer],
    summary="Automatic rollback decisions (breaches of production's live limits), newest first.",
)
class RollbackListView(RegistryListView):
    """What CLM decided each time a production version breached its live limits."""

    serializer_class = s.RollbackDecisionSerializer
    query_serializer_class = s.RollbackQuerySerializer

    def get_queryset(self) -> QuerySet:
        given = {k: v for k, v in self.query_params().items() if v not in ("", None)}
        return rollback.rollback_decisions_list(**given)
