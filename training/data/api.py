"""Bars over HTTP: batches in (JSON rows, CSV/TSV/Parquet bodies), coverage and series out.

`POST /clm/bars` needs the `training.add_bar` permission; reads need a logged-in user. A batch is
parsed by training.data.ingest (the parser the import command uses) and upserted in one transaction.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import generics, serializers, status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import BaseParser
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from clm_project.exceptions import NotFound
from registry.api.serializers import SYMBOL_PATTERN
from registry.models import Timeframe
from training.data import selectors
from training.data.bars import ImportSummary, bars_ingest
from training.data.ingest import ParsedBars

ADD_BAR = "training.add_bar"
DEFAULT_MAX_BODY_BYTES = 256 * 2**20


class CanAddBars(BasePermission):
    message = f"Sending bars needs the {ADD_BAR} permission."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return request.method in ("GET", "HEAD", "OPTIONS") or request.user.has_perm(ADD_BAR)


class BodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"


def _read_body(stream: Any) -> bytes:
    """The body, up to CLM_BARS_MAX_BODY_BYTES: a batch may be far larger than Django's default
    upload limit for forms (2.5 MB), so this endpoint reads the stream itself, with its own cap."""
    limit = getattr(settings, "CLM_BARS_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)
    data = stream.read(limit + 1) if stream is not None else b""
    if len(data) > limit:
        raise BodyTooLarge(f"a batch of bars is at most {limit:,} bytes; split it")
    return data


class BarsJSONParser(BaseParser):
    """JSON read from the stream (not through request.body and its form-sized limit)."""

    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return json.loads(_read_body(stream))
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise ParseError(f"JSON parse error - {exc}") from None


class RawBodyParser(BaseParser):
    """A file as the body (CSV, TSV, Parquet): handed to the parser as bytes."""

    media_type = "*/*"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        return _read_body(stream)


class CSVRenderer(BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context=None):
        return data.encode() if isinstance(data, str) else JSONRenderer().render(data)


# ---------------------------------------------------------------------------------------------
# Serializers


class BarsOptionsSerializer(serializers.Serializer):
    symbol = serializers.RegexField(SYMBOL_PATTERN, max_length=32)
    timeframe = serializers.ChoiceField(choices=Timeframe.choices)
    tz = serializers.CharField(
        required=False, default="UTC", max_length=64,
        help_text="Time zone of timestamps without an offset (default UTC).",
    )  # fmt: skip
    columns = serializers.CharField(
        required=False, default="", max_length=500,
        help_text="Column mapping override, e.g. 'timestamp=Date,close=Last'.",
    )  # fmt: skip
    date_format = serializers.CharField(
        required=False, default=None, max_length=64, help_text="strptime format, e.g. %d/%m/%Y."
    )


@extend_schema_field(
    {"type": "array", "items": {"oneOf": [{"type": "object"}, {"type": "array", "items": {}}]}}
)
class RowsField(serializers.Field):
    """A list of rows, passed on as is: the bar parser checks every cell, with row numbers (a
    JSONField would re-encode 100,000 rows just to check they are JSON)."""

    def to_internal_value(self, data: Any) -> list:
        if not isinstance(data, list):
            raise serializers.ValidationError("a list of rows (objects or lists)")
        return data


class BarsBatchSerializer(BarsOptionsSerializer):
    bars = RowsField(
        help_text="Rows as objects ({timestamp, open, high, low, close, volume}; the usual "
        "aliases such as time/o/h/l/c/v are accepted) or as lists "
        "[timestamp, open, high, low, close, volume]. Timestamps ISO 8601 or epoch s/ms/us/ns."
    )


class BarsSummarySerializer(serializers.Serializer):
    symbol = serializers.CharField()
    timeframe = serializers.CharField()
    rows = serializers.IntegerField()
    new = serializers.IntegerField()
    replaced = serializers.IntegerField()
    first = serializers.DateTimeField(allow_null=True)
    last = serializers.DateTimeField(allow_null=True)
    notes = serializers.ListField(child=serializers.CharField(), help_text="How it was read.")


class GapSerializer(serializers.Serializer):
    after = serializers.DateTimeField(help_text="The last bar before the gap.")
    before = serializers.DateTimeField(help_text="The first bar after it.")
    spacing_seconds = serializers.IntegerField(help_text="How far apart the two bars are.")


class CoverageSerializer(serializers.Serializer):
    symbol = serializers.CharField()
    timeframe = serializers.CharField()
    count = serializers.IntegerField()
    first = serializers.DateTimeField()
    last = serializers.DateTimeField()
    calendar = serializers.CharField(help_text="The calendar whose gaps are allowed.")
    max_gap_seconds = serializers.IntegerField(help_text="The longest spacing the calendar allows.")
    gaps = serializers.IntegerField(help_text="Spacings the calendar does not allow.")
    longest_gaps = GapSerializer(many=True)


class BarSerializer(serializers.Serializer):
    timestamp = serializers.DateTimeField()
    open = serializers.FloatField()
    high = serializers.FloatField()
    low = serializers.FloatField()
    close = serializers.FloatField()
    volume = serializers.FloatField()


class BarRangeSerializer(serializers.Serializer):
    start = serializers.DateTimeField(required=False, help_text="Inclusive.")
    end = serializers.DateTimeField(required=False, help_text="Exclusive.")


def _summary(summary: ImportSummary, parsed: ParsedBars) -> dict[str, Any]:
    return {
        "symbol": summary.symbol,
        "timeframe": summary.timeframe,
        "rows": summary.rows,
        "new": summary.inserted,
        "replaced": summary.updated,
        "first": summary.first,
        "last": summary.last,
        "notes": parsed.notes,
    }


# ---------------------------------------------------------------------------------------------
# Views


class BarsView(APIView):
    permission_classes = [IsAuthenticated, CanAddBars]
    parser_classes = [BarsJSONParser, RawBodyParser]

    @extend_schema(
        operation_id="clm_bars_coverage",
        summary="Bars stored per symbol and timeframe: first, last, count, gaps.",
        responses=CoverageSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        return Response(CoverageSerializer(selectors.bars_coverage(), many=True).data)

    @extend_schema(
        summary="Upsert a batch of bars for one symbol and timeframe (all or none).",
        description="JSON body: {symbol, timeframe, bars: [...], tz?, columns?, date_format?}. "
        "Or a file as the body (text/csv, text/tab-separated-values, application/octet-stream "
        "for Parquet) with symbol, timeframe, tz, columns, date_format as query parameters. "
        "Bars are matched by (symbol, timeframe, timestamp): sending a batch twice changes "
        "nothing. Bad rows answer 400 with each row's number and reason.",
        request={
            "application/json": BarsBatchSerializer,
            "text/csv": OpenApiTypes.BINARY,
            "application/octet-stream": OpenApiTypes.BINARY,
        },
        parameters=[
            OpenApiParameter("symbol", str, required=False, description="For a file body."),
            OpenApiParameter("timeframe", str, required=False, description="For a file body."),
        ],
        responses={
            200: BarsSummarySerializer,
            400: OpenApiResponse(description="Bad rows (by number), unknown columns, bad options."),
        },
    )
    def post(self, request: Request) -> Response:
        data = request.data
        if isinstance(data, bytes | str):
            options = dict(_validated(BarsOptionsSerializer, request.query_params))
            options["body"] = data.encode() if isinstance(data, str) else data
        elif isinstance(data, dict):
            options = dict(_validated(BarsBatchSerializer, data))
            options["rows"] = options.pop("bars")
        else:
            raise ParseError("the body must be a JSON object or a file of bars")
        summary, parsed = bars_ingest(**options)
        return Response(BarsSummarySerializer(_summary(summary, parsed)).data)


def _validated(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class BarPagination(LimitOffsetPagination):
    default_limit = 1_000
    max_limit = 10_000


@extend_schema_view(
    get=extend_schema(
        operation_id="clm_bars_series",
        summary="The bars of one series in [start, end): paginated JSON, or CSV with ?format=csv.",
        parameters=[BarRangeSerializer],
    )
)
class BarSeriesView(generics.ListAPIView):
    serializer_class = BarSerializer
    pagination_class = BarPagination
    filter_backends: list = []
    renderer_classes = [JSONRenderer, CSVRenderer]

    def _range(self) -> tuple[datetime | None, datetime | None]:
        if self.kwargs["timeframe"] not in Timeframe.values:
            raise NotFound(f"unknown timeframe {self.kwargs['timeframe']!r}")
        serializer = BarRangeSerializer(data=self.request.query_params)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data.get("start"), serializer.validated_data.get("end")

    def get_queryset(self) -> Any:
        start, end = self._range()
        return selectors.bars_range(
            symbol=self.kwargs["symbol"], timeframe=self.kwargs["timeframe"], start=start, end=end
        )

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if request.accepted_renderer.format == "csv":
            start, end = self._range()
            text = selectors.bars_csv(
                symbol=kwargs["symbol"], timeframe=kwargs["timeframe"], start=start, end=end
            )
            return Response(text, content_type="text/csv; charset=utf-8")
        return super().list(request, *args, **kwargs)
