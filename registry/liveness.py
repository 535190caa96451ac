"""Signs of life that `/health` reports: workers (per hostname) and celery-beat's ticks.

A worker's main process records itself from a daemon thread every CLM_LIVENESS_INTERVAL seconds,
with the queues it consumes, for as long as it runs: a killed worker stops, and its row ages. Beat
records its ticks through `Scheduler`, django-celery-beat's DatabaseScheduler plus that record
(settings.CELERY_BEAT_SCHEDULER). Recording never stops the process it reports on: a database
that does not answer is logged and tried again at the next interval.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from django.db import close_old_connections, connection
from django_celery_beat.schedulers import DatabaseScheduler

logger = logging.getLogger(__name__)

BEAT_NAME = "celery-beat"


def _record(*, kind: str, name: str, info: dict[str, Any]) -> None:
    from registry import services

    try:
        services.liveness_record(kind=kind, name=name, info=info)
    except Exception as exc:  # a database outage must not stop the worker or beat
        logger.warning("could not record that %s %s is alive: %s", kind, name, exc)
        close_old_connections()


class Heartbeat(threading.Thread):
    """Calls `beat` every CLM_JOB_HEARTBEAT_INTERVAL seconds while the work it guards runs (a
    training job, a candidate's evaluation), until `beat` answers False: the work is no longer
    this attempt's.

    A thread of the process doing the work, so it beats through a long fit in any library (they
    release the GIL in their native loops) and stops when that process dies: whoever watches
    the heartbeat (the reaper, the next claim) then sees it go stale and takes the work back.
    """

    def __init__(self, *, name: str, beat: Callable[[], bool]) -> None:
        super().__init__(name=f"clm-heartbeat {name}", daemon=True)
        self.what = name
        self.beat = beat
        self.stopped = threading.Event()

    def __enter__(self) -> Heartbeat:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.join(timeout=5)

    def run(self) -> None:
        try:
            while not self.stopped.wait(settings.CLM_JOB_HEARTBEAT_INTERVAL):
                try:
                    held = self.beat()
                except Exception as exc:  # the database may come back before the timeout
                    logger.warning("heartbeat of %s failed: %s", self.what, exc)
                    close_old_connections()
                    continue
                if not held:
                    return
        finally:
            connection.close()


class _WorkerBeacon(threading.Thread):
    """Records the worker every interval until the worker shuts down (or dies with it)."""

    def __init__(self, *, hostname: str, queues: list[str]) -> None:
        super().__init__(name="clm-liveness", daemon=True)
        self.hostname = hostname
        self.queues = queues
        self.stopped = threading.Event()

    def run(self) -> None:
        info = {"queues": self.queues, "pid": os.getpid(), "host": socket.gethostname()}
        try:
            while True:
                _record(kind="worker", name=self.hostname, info=info)
                if self.stopped.wait(settings.CLM_LIVENESS_INTERVAL):
                    break
        finally:
            connection.close()


_beacon: _WorkerBeacon | None = None


def _worker_ready(sender: Any = None, **_: Any) -> None:
    global _beacon
    try:
        hostname = sender.hostname
        queues = sorted(sender.app.amqp.queues.consume_from or sender.app.amqp.queues)
    except Exception:  # an unusual consumer: still record the worker, without its queues
        hostname, queues = f"{os.getpid()}@{socket.gethostname()}", []
    _beacon = _WorkerBeacon(hostname=hostname, queues=queues)
    _beacon.start()


def _worker_shutdown(**_: Any) -> None:
    if _beacon is not None:
        _beacon.stopped.set()


worker_ready.connect(_worker_ready, weak=False, dispatch_uid="clm-liveness-ready")
worker_shutdown.connect(_worker_shutdown, weak=False, dispatch_uid="clm-liveness-shutdown")


class Scheduler(DatabaseScheduler):
    """django-celery-beat's scheduler that also records, at most every interval, that it ticks."""

    _recorded_at = 0.0

    def tick(self, *args: Any, **kwargs: Any) -> float:
        interval = super().tick(*args, **kwargs)
        now = time.monotonic()
        if now - self._recorded_at >= settings.CLM_LIVENESS_INTERVAL:
            self._recorded_at = now
            _record(kind="beat", name=BEAT_NAME, info={"pid": os.getpid()})
        return min(interval, settings.CLM_LIVENESS_INTERVAL)
