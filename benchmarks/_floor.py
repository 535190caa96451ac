"""The least a request can cost through CLM's serving stack: reference lines for the MLflow
comparison (bench_registry_mlflow), served by a gunicorn of their own with CLM's settings.

  /floor/wsgi  gunicorn answering `{}` from a plain WSGI function: HTTP and the client alone;
  /floor/drf   Django with CLM's middleware, then a DRF view with CLM's defaults (token
               authentication against the database, IsAuthenticated, the JSON renderer)
               answering `{}`: every authenticated CLM request costs at least this.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clm_project.settings.production")

from clm_project.wsgi import application as clm  # sets Django up first


def _empty_view() -> Callable[..., Any]:
    from rest_framework.request import Request
    from rest_framework.response import Response
    from rest_framework.views import APIView

    class Empty(APIView):
        """CLM's API defaults and no data."""

        def get(self, request: Request) -> Response:
            return Response({})

    return Empty.as_view()


def _route() -> None:
    """/floor/drf ahead of CLM's own paths, before the first request builds the URL resolver."""
    from django.urls import path

    from clm_project import urls

    urls.urlpatterns.insert(0, path("floor/drf", _empty_view()))


_route()


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/floor/wsgi":
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "2")])
        return [b"{}"]
    return clm(environ, start_response)
