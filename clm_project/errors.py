"""Django's error pages (no URL matched, a refused request, an unhandled error) for API paths.

DRF's exception handler shapes errors raised inside API views; these handlers cover what happens
outside them, so that a client of /clm/... gets the API's JSON error body, never an HTML page.
Other paths (the admin) keep Django's pages, which show no debug detail with DEBUG off.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

API_PREFIXES = ("/clm/", "/api/")


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIXES)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(
            {"detail": "Bad request.", "code": "bad_request", "errors": {}}, status=400
        )
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(
            {"detail": "You do not have permission to perform this action.",
             "code": "permission_denied", "errors": {}},
            status=403,
        )  # fmt: skip
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": "Not found.", "code": "not_found", "errors": {}}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(
            {"detail": "Server error.", "code": "server_error", "errors": {}}, status=500
        )
    return defaults.server_error(request)
