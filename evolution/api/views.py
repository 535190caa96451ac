"""HTTP adapters over evolution services and selectors: validate, call, serialize."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from clm_project.api import (
    JSONRenderer,
    PNGRenderer,
    SelectorListView,
    SVGRenderer,
    error_responses,
    validated,
)
from clm_project.exceptions import NotFound
from clm_project.query import query_validated
from evolution import selectors, services
from evolution.api import serializers as s
from evolution.plots import FORMATS, front_picture
from registry import display

RUN_EVOLUTION = "evolution.run_evolution"
CANDIDATE_ID = OpenApiParameter("candidate_id", OpenApiTypes.UUID, OpenApiParameter.PATH)
RUN_ID = OpenApiParameter("run_id", OpenApiTypes.UUID, OpenApiParameter.PATH)


_errors = error_responses("Unknown candidate, run or generation.")


class CanRunEvolution(BasePermission):
    message = f"Starting, stopping or resuming runs and selecting candidates needs {RUN_EVOLUTION}."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return request.user.has_perm(RUN_EVOLUTION)


# ---------------------------------------------------------------------------------------------
# Candidates


@extend_schema(
    parameters=[s.CandidateQuerySerializer],
    summary="Strategy candidates, newest first (filters: status, origin, run, generation, ...).",
)
class CandidateListView(SelectorListView):
    drop_empty_params = True
    serializer_class = s.CandidateSerializer
    query_serializer_class = s.CandidateQuerySerializer

    def get_queryset(self) -> QuerySet:
        return selectors.candidate_list(**self.query_params())


class CandidateTopView(APIView):
    @extend_schema(
        parameters=[s.TopQuerySerializer],
        responses={200: s.TopCandidateSerializer(many=True), **_errors(400)},
        summary="The best n evaluated candidates: feasible first, then Pareto rank, then crowding.",
    )
    def get(self, request: Request) -> Response:
        query = query_validated(s.TopQuerySerializer, request.query_params)
        filters = {k: v for k, v in query.items() if v not in ("", None)}
        top = selectors.select_top_candidates(**filters)
        rows = []
        for candidate, standing in top:
            candidate.rank, candidate.crowding = standing.rank, standing.crowding
            rows.append(candidate)
        return Response(s.TopCandidateSerializer(rows, many=True).data)


class CandidateDetailView(APIView):
    @extend_schema(
        parameters=[CANDIDATE_ID, s.DetailQuerySerializer],
        responses={200: s.CandidateDetailSerializer, **_errors(400, 404)},
        summary="A candidate with its lineage (ancestors to `depth`, children) and its DSR.",
    )
    def get(self, request: Request, candidate_id: str) -> Response:
        depth = query_validated(s.DetailQuerySerializer, request.query_params)["depth"]
        candidate = selectors.candidate_get(candidate_id=candidate_id)
        context = {
            "request": request,
            "lineage": selectors.candidate_lineage(candidate=candidate, depth=depth),
            "parent_ids": selectors.candidate_parent_ids(candidate=candidate),
        }
        return Response(s.CandidateDetailSerializer(candidate, context=context).data)


class CandidateSelectView(APIView):
    permission_classes = [IsAuthenticated, CanRunEvolution]

    @extend_schema(
        parameters=[CANDIDATE_ID],
        request=s.SelectInputSerializer,
        responses={202: s.SelectResponseSerializer, **_errors(400, 404, 409)},
        summary="Send an evaluated candidate to training (trigger strategy_evolution).",
    )
    def post(self, request: Request, candidate_id: str) -> Response:
        data = validated(s.SelectInputSerializer, request.data)
        candidate, job = services.candidate_select(
            candidate_id=candidate_id, actor=request.user.get_username(), reason=data["reason"]
        )
        candidate = selectors.candidate_get(candidate_id=candidate.pk)
        body = {
            "candidate": s.CandidateSerializer(candidate).data,
            "job": s.JobSummarySerializer(job).data,
        }
        return Response(body, status=status.HTTP_202_ACCEPTED)


class CandidateMutateView(APIView):
    permission_classes = [IsAuthenticated, CanRunEvolution]

    @extend_schema(
        parameters=[CANDIDATE_ID],
        request=s.MutateInputSerializer,
        responses={201: s.CandidateSerializer, **_errors(400, 404)},
        summary="Propose a polynomial mutation of a candidate (evaluated in the background).",
    )
    def post(self, request: Request, candidate_id: str) -> Response:
        data = validated(s.MutateInputSerializer, request.data)
        child = services.mutate_strategy(parent_id=candidate_id, seed=data.get("seed"))
        child = selectors.candidate_get(candidate_id=child.pk)
        return Response(s.CandidateSerializer(child).data, status=status.HTTP_201_CREATED)


class CandidateCrossoverView(APIView):
    permission_classes = [IsAuthenticated, CanRunEvolution]

    @extend_schema(
        request=s.CrossoverInputSerializer,
        responses={201: s.CandidateSerializer, **_errors(400, 404)},
        summary="Propose an SBX crossover of two candidates (evaluated in the background).",
    )
    def post(self, request: Request) -> Response:
        data = validated(s.CrossoverInputSerializer, request.data)
        child = services.crossover_strategies(
            first_id=data["first"], second_id=data["second"], seed=data.get("seed")
        )
        child = selectors.candidate_get(candidate_id=child.pk)
        return Response(s.CandidateSerializer(child).data, status=status.HTTP_201_CREATED)


class CandidateProposeView(APIView):
    permission_classes = [IsAuthenticated, CanRunEvolution]

    @extend_schema(
        request=s.ProposeInputSerializer,
        responses={
            201: s.CandidateSerializer(many=True),
            200: OpenApiResponse(
                s.CandidateSerializer(many=True), description="Performing well: none proposed."
            ),
            **_errors(400, 404),
        },
        summary="Given a production model's performance, propose mutations if it does poorly.",
    )
    def post(self, request: Request) -> Response:
        data = dict(validated(s.ProposeInputSerializer, request.data))
        n = data.pop("n")
        children = services.propose_new_candidates(performance_data=data, n=n)
        rows = selectors.candidate_list().filter(pk__in=[c.pk for c in children])
        code = status.HTTP_201_CREATED if children else status.HTTP_200_OK
        return Response(s.CandidateSerializer(rows, many=True).data, status=code)


class StatsView(APIView):
    @extend_schema(responses=s.StatsSerializer, summary="Candidates and runs by status.")
    def get(self, request: Request) -> Response:
        return Response(s.StatsSerializer(selectors.evolution_stats()).data)


# ---------------------------------------------------------------------------------------------
# Runs


class RunListCreateView(SelectorListView):
    drop_empty_params = True
    serializer_class = s.RunSerializer
    query_serializer_class = s.RunQuerySerializer

    def get_permissions(self) -> list[BasePermission]:
        if self.request.method == "POST":
            return [IsAuthenticated(), CanRunEvolution()]
        return [IsAuthenticated()]

    def get_queryset(self) -> QuerySet:
        return selectors.run_list(**self.query_params())

    @extend_schema(parameters=[s.RunQuerySerializer], summary="Evolution runs, newest first.")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=s.RunInputSerializer,
        responses={202: s.RunDetailSerializer, **_errors(400)},
        summary="Start an NSGA-II run; its first generation is dispatched to the workers.",
    )
    def post(self, request: Request) -> Response:
        data = validated(s.RunInputSerializer, request.data)
        run = services.evolution_run_create(
            request=services.RunRequest(**data, requested_by=request.user.get_username())
        )
        body = s.RunDetailSerializer(selectors.run_get(run_id=run.pk), context={"request": request})
        return Response(body.data, status=status.HTTP_202_ACCEPTED)


class RunDetailView(APIView):
    @extend_schema(
        parameters=[RUN_ID],
        responses={200: s.RunDetailSerializer, **_errors(404)},
        summary="A run with each generation's Pareto front and hypervolume.",
    )
    def get(self, request: Request, run_id: str) -> Response:
        run = selectors.run_get(run_id=run_id)
        return Response(s.RunDetailSerializer(run, context={"request": request}).data)


class RunStopView(APIView):
    permission_classes = [IsAuthenticated, CanRunEvolution]

    @extend_schema(
        parameters=[RUN_ID],
        request=None,
        responses={200: s.RunDetailSerializer, **_errors(404, 409)},
        summary="Stop a run: running candidates finish, no new ones start.",
    )
    def post(self, request: Request, run_id: str) -> Response:
        run = selectors.run_get(run_id=run_id)
        services.evolution_run_stop(run_id=run.pk, actor=request.user.get_username())
        run = selectors.run_get(run_id=run.pk)
        return Response(s.RunDetailSerializer(run, context={"request": request}).data)


class RunResumeView(APIView):
    permission_classes = [IsAuthenticated, CanRunEvolution]

    @extend_schema(
        parameters=[RUN_ID],
        request=None,
        responses={202: s.RunDetailSerializer, **_errors(404, 409)},
        summary="Resume a stopped run, or one whose workers crashed; nothing is evaluated twice.",
    )
    def post(self, request: Request, run_id: str) -> Response:
        run = selectors.run_get(run_id=run_id)
        services.evolution_run_resume(run_id=run.pk, actor=request.user.get_username())
        run = selectors.run_get(run_id=run.pk)
        body = s.RunDetailSerializer(run, context={"request": request}).data
        return Response(body, status=status.HTTP_202_ACCEPTED)


class FrontPictureView(APIView):
    renderer_classes = [JSONRenderer, PNGRenderer, SVGRenderer]

    @extend_schema(
        parameters=[
            RUN_ID,
            OpenApiParameter("number", OpenApiTypes.INT, OpenApiParameter.PATH),
            OpenApiParameter("fmt", OpenApiTypes.STR, OpenApiParameter.PATH, enum=list(FORMATS)),
        ],
        responses={
            (200, "image/png"): OpenApiTypes.BINARY,
            (200, "image/svg+xml"): OpenApiTypes.BINARY,
            **_errors(404),
        },
        summary="The generation's Pareto front, Sharpe against drawdown, as PNG or SVG.",
    )
    def get(self, request: Request, run_id: str, number: int, fmt: str) -> HttpResponse:
        if fmt not in FORMATS:
            raise NotFound(f"no picture format {fmt!r}; use {' or '.join(FORMATS)}")
        generation = selectors.generation_get(run_id=run_id, number=number)
        earlier = selectors.run_get(run_id=generation.run_id).generation_set.filter(
            number__lt=number
        )
        picture = front_picture(
            points=selectors.generation_points(generation=generation),
            front=generation.front,
            earlier_fronts=[g.front for g in earlier.order_by("number")],
            title=(
                f"{generation.run.model_type} {generation.run.symbol} {generation.run.timeframe}: "
                f"generation {number} ({generation.status}), hypervolume "
                f"{display.significant(generation.hypervolume)}"
            ),
            fmt=fmt,
        )
        response = HttpResponse(picture, content_type=FORMATS[fmt])
        response["Cache-Control"] = "no-cache" if generation.status != "complete" else "max-age=300"
        return response
