"""The one domain-error type and the DRF handler that maps it (and Django's errors) to HTTP."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import (
    PermissionDenied,
    RequestDataTooBig,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler


class DomainError(Exception):
    """A request the domain refuses: an illegal transition or a conflicting state (HTTP 409)."""

    status_code = status.HTTP_409_CONFLICT
    code = "conflict"

    def __init__(self, message: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}


class NotFound(DomainError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class InvalidInput(DomainError):
    """Input that passed the serializer but not the domain's checks (HTTP 400)."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "invalid"

    def __init__(self, message: str, *, field: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.field = field


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, RequestDataTooBig):  # Django's own answer would be a plain-text 400
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(
            {
                "detail": f"Request body larger than {limit} bytes.",
                "code": "too_large",
                "errors": {},
            },
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        return Response({"detail": str(exc), "code": "too_many_fields", "errors": {}}, status=400)
    if isinstance(exc, DomainError):
        body: dict[str, Any] = {"detail": exc.message, "code": exc.code, "errors": {}, **exc.extra}
        if isinstance(exc, InvalidInput) and exc.field:
            body["errors"] = {exc.field: [exc.message]}
        return Response(body, status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is not None and isinstance(exc, exceptions.ValidationError):
        detail = response.data
        response.data = {
            "detail": "Invalid input.",
            "code": "invalid",
            "errors": detail if isinstance(detail, dict) else {"non_field_errors": detail},
        }
    elif response is not None and isinstance(exc, exceptions.APIException):
        # One shape for every error (401, 403, 404, 405, 406, 415, 429...): detail, code, errors.
        codes = exc.get_codes()
        response.data = {
            "detail": str(exc.detail)
            if not isinstance(exc.detail, dict | list)
            else exc.default_detail,
            "code": codes if isinstance(codes, str) else exc.default_code,
            "errors": {},
        }
    return response
