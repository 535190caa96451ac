"""GET /metrics: the Prometheus exposition of CLM, for Prometheus or a human with staff rights.

Who may read it:
- with METRICS_TOKEN set (setting or environment variable): a request carrying
  `Authorization: Bearer <token>`;
- without METRICS_TOKEN: any request from a loopback address (Prometheus on the same host);
- always: a logged-in, active staff user (the admin session).
Anything else gets 401 (token configured) or 403. Once a token is set, loopback alone no longer
suffices, so a reverse proxy on the same host cannot open the endpoint to the world.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.crypto import constant_time_compare
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder

from clm_project import metrics  # noqa: F401 (defines the instruments the default registry holds)
from clm_project.metrics_collectors import BrokerQueueCollector, DatabaseCollector


def metrics_token() -> str:
    return getattr(settings, "METRICS_TOKEN", "") or os.environ.get("METRICS_TOKEN", "")


def _is_loopback(address: str | None) -> bool:
    try:
        return ipaddress.ip_address(address or "").is_loopback
    except ValueError:
        return False


def metrics_access_allowed(request: HttpRequest) -> bool:
    token = metrics_token()
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and constant_time_compare(given.strip(), token):
            return True
    elif _is_loopback(request.META.get("REMOTE_ADDR")):
        return True
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff)


class _ProcessMetrics:
    """This process's own instruments (single-process mode): the default registry, re-exposed."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def metrics_registry() -> CollectorRegistry:
    """The instruments of every process (merged from PROMETHEUS_MULTIPROC_DIR when set, else
    this process's), plus the database and broker figures read now."""
    registry = CollectorRegistry(auto_describe=False)
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if directory:
        multiprocess.MultiProcessCollector(registry, path=directory)
    else:
        registry.register(_ProcessMetrics())
    registry.register(DatabaseCollector())
    registry.register(BrokerQueueCollector())
    return registry


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not metrics_access_allowed(request):
        if metrics_token():
            response = HttpResponse("A bearer token is required.\n", status=401)
            response["WWW-Authenticate"] = 'Bearer realm="clm-metrics"'
            return response
        return HttpResponse(
            "Metrics are served to loopback, staff, or a bearer token (set METRICS_TOKEN).\n",
            status=403,
        )
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(metrics_registry()), content_type=content_type)
