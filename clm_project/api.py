"""What every app's HTTP adapters share: the error body and its schema, validation of a request's
data or query, the pagination, the selector-backed list view, and the renderers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from drf_spectacular.utils import OpenApiResponse
from rest_framework import generics, renderers, serializers
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import Serializer
from rest_framework.views import APIView

from clm_project.query import query_validated
from clm_project.renderers import JSONRenderer

__all__ = ["JSONRenderer"]  # every renderer a view names comes from here


class ErrorSerializer(serializers.Serializer):
    """The body of every 4xx answer (see clm_project.exceptions.api_exception_handler)."""

    detail = serializers.CharField()
    code = serializers.CharField()
    # A field named like Serializer.errors: it only describes the body, never validates one.
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.JSONField(),
        help_text="Messages by field: a list of strings, or an object for nested fields.",
    )


def error_responses(not_found: str) -> Callable[..., dict[int, OpenApiResponse]]:
    """The schema of an app's error answers; `not_found` says what a 404 means there. Returns a
    function of the status codes a view can answer with."""
    described = {
        400: OpenApiResponse(ErrorSerializer, description="Invalid input, with field messages."),
        404: OpenApiResponse(ErrorSerializer, description=not_found),
        409: OpenApiResponse(ErrorSerializer, description="Illegal transition or conflict."),
    }

    def responses(*codes: int) -> dict[int, OpenApiResponse]:
        return {code: described[code] for code in codes}

    return responses


def validated(serializer_class: type[Serializer], data: Any) -> dict[str, Any]:
    """The serializer's validated data; invalid data raises (a 400 with field messages)."""
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


class Pagination(LimitOffsetPagination):
    max_limit = 500


class SelectorListView(generics.ListAPIView):
    """A paginated list whose rows come from a selector called with validated query parameters
    (the query serializer validates the filters, strictly: clm_project.query; the selector
    applies them)."""

    filter_backends: list = []
    pagination_class = Pagination
    query_serializer_class: type[Serializer] | None = None
    # Leave out parameters given empty, so the selector sees only real filters.
    drop_empty_params = False

    def query_params(self) -> dict[str, Any]:
        if not hasattr(self, "_query_params"):  # validated once per request, read twice
            self._query_params = query_validated(
                self.query_serializer_class, self.request.query_params
            )
        given = self._query_params
        if self.drop_empty_params:
            return {key: value for key, value in given.items() if value not in ("", None)}
        return given

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        self.query_params()  # an unknown parameter is a 400 even where no filter is defined
        return super().list(request, *args, **kwargs)


class BinaryRenderer(renderers.BaseRenderer):
    """Lets clients ask for a binary media type; bytes go out as they are, anything else (an
    error body) as JSON text."""

    charset = None

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        return data if isinstance(data, bytes) else json.dumps(data).encode()


class OctetStreamRenderer(BinaryRenderer):
    media_type = "application/octet-stream"
    format = "bin"


class PNGRenderer(BinaryRenderer):
    media_type = "image/png"
    format = "png"


class SVGRenderer(BinaryRenderer):
    media_type = "image/svg+xml"
    format = "svg"


class PictureView(APIView):
    """A view answering with a PNG (as a plain HttpResponse)."""

    renderer_classes = [JSONRenderer, PNGRenderer]

    def handle_exception(self, exc: Exception) -> Response:
        """Errors are JSON whatever the client accepted, never a JSON body labelled image/png."""
        response = super().handle_exception(exc)
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return response
