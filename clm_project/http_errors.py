"""Django's own 400, 403, 404 and 500 pages for the API's paths, in the API's JSON error shape.

A path that matches no route (a version that is not a number, a malformed slug) never reaches DRF;
without this it would get Django's HTML page, which no API client expects.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

API_PREFIXES = ("/clm/", "/health", "/api/", "/metrics")


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIXES)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": "Not found.", "code": "not_found", "errors": {}}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(
            {"detail": "Server error.", "code": "server_error", "errors": {}}, status=500
        )
    return defaults.server_error(request)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(
            {"detail": str(exception) or "Bad request.", "code": "bad_request", "errors": {}},
            status=400,
        )
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(
            {"detail": "Permission denied.", "code": "permission_denied", "errors": {}}, status=403
        )
    return defaults.permission_denied(request, exception)
