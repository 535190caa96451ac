"""The one Celery app. Start a worker with:

.venv/bin/celery -A clm_project worker -c 2 -l info

Workers and beat run production settings unless DJANGO_SETTINGS_MODULE says otherwise: a worker is
only ever started for real (the demo runs its tasks in-process, tests name their settings).

Tasks are found by autodiscovery (one tasks.py per installed app). The consumer of incoming broker
events is added here, explicitly, as a worker bootstep (off where CLM_EVENTS_CONSUME is false).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from celery import Celery, bootsteps
from celery.signals import worker_init, worker_process_init

from clm_project import celery_metrics

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clm_project.settings.production")
# OpenMP threads (XGBoost, LightGBM) that wait for work sleep instead of spinning. Read when the
# OpenMP runtime loads, so it is set here, before any model library is imported. Two workers
# whose fits each take both cores of a 2-core machine ran 200 jobs 6.6 times slower than one
# worker with spinning threads; with this, 1.6 times faster (BENCHMARKS.md). Set
# OMP_WAIT_POLICY=ACTIVE for a machine that runs a single fit at a time.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

app = Celery("clm_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
celery_metrics.connect()


def limit_blas_threads(**_: Any) -> None:
    """Cap the BLAS thread pools of a worker's processes at CLM_WORKER_BLAS_THREADS (see there)."""
    from django.conf import settings
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=settings.CLM_WORKER_BLAS_THREADS, user_api="blas")


# In the worker's main process (a solo pool runs its tasks there) and in each pool process.
worker_init.connect(limit_blas_threads, weak=False, dispatch_uid="clm-blas-threads")
worker_process_init.connect(limit_blas_threads, weak=False, dispatch_uid="clm-blas-threads-pool")


class IncomingEventsStep(bootsteps.ConsumerStep):
    """Consumes the incoming-events queue inside each worker, on the worker's broker connection."""

    def get_consumers(self, channel: Any) -> list[Any]:
        from django.conf import settings

        if not settings.CLM_EVENTS_CONSUME:
            return []
        from training.retraining.events import incoming_consumers

        return incoming_consumers(channel)


app.steps["consumer"].add(IncomingEventsStep)


def tasks_loaded() -> None:
    """Import every app's tasks module in this process, as a worker does at start (autodiscovery
    is lazy), so tasks addressed by name also run here when Celery is eager."""
    app.loader.import_default_modules()


def send_task_by_name(name: str, *, args: list[Any], **options: Any) -> None:
    """Send a task by its registered name, so a lower layer (the registry) can dispatch work of an
    app above it without importing it. A task this process knows runs through its own
    apply_async, which honours CELERY_TASK_ALWAYS_EAGER (send_task would ignore it)."""
    if name not in app.tasks:
        tasks_loaded()
    task = app.tasks.get(name)
    if task is not None:
        task.apply_async(args=args, **options)
    else:
        app.send_task(name, args=args, **options)


def task_queue(name: str) -> str:
    """The queue settings.CELERY_TASK_ROUTES sends the task called `name` to."""
    return app.amqp.router.route({}, name)["queue"].name


def fan_out(name: str, items: Iterable[Any], *, batch: int = 1) -> int:
    """Send the task called `name` once per item (`batch` 1: the item is its one argument) or
    once per list of up to `batch` items, so that workers on every machine share a pass over many
    models. Returns how many messages were sent."""
    sent = 0
    chunk: list[Any] = []
    for item in items:
        if batch == 1:
            send_task_by_name(name, args=[item])
            sent += 1
            continue
        chunk.append(item)
        if len(chunk) == batch:
            send_task_by_name(name, args=[chunk])
            sent, chunk = sent + 1, []
    if chunk:
        send_task_by_name(name, args=[chunk])
        sent += 1
    return sent
