"""Health and status reads for `/health` and `/clm/status`."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Count

from registry.models import (
    JobStatus,
    ModelStatus,
    ModelVersion,
    OutboxEvent,
    RegisteredModel,
    TrainingJob,
)

BROKER_TIMEOUT_S = 1.0


def database_check() -> tuple[bool, str]:
    """(reachable, detail): a `SELECT 1` on the default database."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        return False, f"unreachable: {exc.__class__.__name__}"
    return True, "ok"


def broker_check() -> tuple[bool, str]:
    """(reachable, detail): one connection attempt to the Celery broker, about a second at most.

    Without a broker URL tasks run in-process, which counts as reachable.
    """
    url = settings.CELERY_BROKER_URL
    if not url:
        return True, "not configured (eager)"
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=BROKER_TIMEOUT_S) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT_S)
    except Exception as exc:  # any transport error means "unreachable", never a failed request
        return False, f"unreachable: {exc.__class__.__name__}"
    return True, "ok"


def health_check() -> dict[str, Any]:
    """The `/health` report; `healthy` follows the database alone (the broker may recover)."""
    db_ok, db_detail = database_check()
    broker_ok, broker_detail = broker_check()
    return {
        "healthy": db_ok,
        "database": {"ok": db_ok, "detail": db_detail},
        "broker": {"ok": broker_ok, "detail": broker_detail},
    }


def clm_status() -> dict[str, Any]:
    """Counts of jobs and versions by status, models, unpublished events and the latest job."""
    jobs = dict(TrainingJob.objects.values_list("status").annotate(n=Count("pk")).order_by())
    versions = dict(ModelVersion.objects.values_list("status").annotate(n=Count("pk")).order_by())
    return {
        "jobs": {status: jobs.get(status, 0) for status in JobStatus.values},
        "models": RegisteredModel.objects.count(),
        "versions": {status: versions.get(status, 0) for status in ModelStatus.values},
        "production_versions": versions.get(ModelStatus.PRODUCTION, 0),
        "unpublished_events": OutboxEvent.objects.filter(published_at__isnull=True).count(),
        "latest_job": TrainingJob.objects.select_related("model", "version__model")
        .order_by("-created_at")
        .first(),
    }
