"""Health and status reads for `/health` and `/clm/status`."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Count
from django.utils import timezone

from registry.models import (
    JobStatus,
    Liveness,
    LivenessKind,
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
        options = {"socket_timeout": BROKER_TIMEOUT_S, "socket_connect_timeout": BROKER_TIMEOUT_S}
        with Connection(url, connect_timeout=BROKER_TIMEOUT_S, transport_options=options) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT_S)
    except Exception as exc:  # any transport error means "unreachable", never a failed request
        return False, f"unreachable: {exc.__class__.__name__}"
    return True, "ok"


def _age(seen_at: Any) -> float | None:
    return None if seen_at is None else round((timezone.now() - seen_at).total_seconds(), 1)


def _timed(check: Any) -> tuple[bool, str, float]:
    started = time.perf_counter()
    ok, detail = check()
    return ok, detail, round(time.perf_counter() - started, 3)


def liveness_report(db_ok: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(workers, beat): who consumes the training queue and when beat last ticked, with ages.

    A sign of life older than three recording intervals counts as gone (the process stopped).
    """
    stale = 3 * settings.CLM_LIVENESS_INTERVAL
    if not db_ok:
        unknown = {"ok": False, "detail": "unknown: database unreachable", "age_s": None}
        return {**unknown, "count": 0, "hostnames": []}, {**unknown, "last_tick_at": None}
    try:
        rows = list(Liveness.objects.all())
    except DatabaseError as exc:
        unknown = {"ok": False, "detail": f"unknown: {exc.__class__.__name__}", "age_s": None}
        return {**unknown, "count": 0, "hostnames": []}, {**unknown, "last_tick_at": None}
    training_queue = getattr(settings, "CLM_TRAINING_QUEUE", "training")
    live = [
        row
        for row in rows
        if row.kind == LivenessKind.WORKER
        and _age(row.seen_at) <= stale
        and (not row.info.get("queues") or training_queue in row.info["queues"])
    ]
    freshest = max((row.seen_at for row in live), default=None)
    workers = {
        "ok": bool(live),
        "detail": f"{len(live)} consuming {training_queue!r}"
        if live
        else f"no worker consumes {training_queue!r}",
        "count": len(live),
        "hostnames": sorted(row.name for row in live),
        "age_s": _age(freshest),
    }
    tick = max((row.seen_at for row in rows if row.kind == LivenessKind.BEAT), default=None)
    age = _age(tick)
    beat = {
        "ok": age is not None and age <= stale,
        "detail": "never ticked"
        if tick is None
        else ("ticking" if age <= stale else f"no tick for {age:.0f} s"),
        "last_tick_at": tick,
        "age_s": age,
    }
    return workers, beat


def health_check() -> dict[str, Any]:
    """The `/health` report; `healthy` follows the database alone (the broker may recover).

    Each part says how old its information is: `age_s` is 0 for what was asked now (database,
    broker: `seconds` is how long the asking took), else the age of the last sign of life.
    """
    db_ok, db_detail, db_seconds = _timed(database_check)
    broker_ok, broker_detail, broker_seconds = _timed(broker_check)
    workers, beat = liveness_report(db_ok)
    return {
        "healthy": db_ok,
        "database": {"ok": db_ok, "detail": db_detail, "age_s": 0.0, "seconds": db_seconds},
        "broker": {
            "ok": broker_ok, "detail": broker_detail, "age_s": 0.0, "seconds": broker_seconds,
        },
        "workers": workers,
        "beat": beat,
    }  # fmt: skip


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
