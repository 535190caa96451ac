"""The one Celery app. Start a worker with:

.venv/bin/celery -A clm_project worker -c 2 -l info

Workers and beat run production settings unless DJANGO_SETTINGS_MODULE says otherwise: a worker is
only ever started for real (the demo runs its tasks in-process, tests name their settings).

Tasks are found by autodiscovery (one tasks.py per installed app). The consumer of incoming broker
events is added here, explicitly, as a worker bootstep (off where CLM_EVENTS_CONSUME is false).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, bootsteps

from clm_project import celery_metrics

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clm_project.settings.production")

app = Celery("clm_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
celery_metrics.connect()


class IncomingEventsStep(bootsteps.ConsumerStep):
    """Consumes the incoming-events queue inside each worker, on the worker's broker connection."""

    def get_consumers(self, channel: Any) -> list[Any]:
        from django.conf import settings

        if not settings.CLM_EVENTS_CONSUME:
            return []
        from training.retraining.events import incoming_consumers

        return incoming_consumers(channel)


app.steps["consumer"].add(IncomingEventsStep)


def send_task_by_name(name: str, *, args: list[Any], **options: Any) -> None:
    """Send a task by its registered name, so a lower layer (the registry) can dispatch work of an
    app above it without importing it. A task this process knows runs through its own
    apply_async, which honours CELERY_TASK_ALWAYS_EAGER (send_task would ignore it)."""
    task = app.tasks.get(name)
    if task is not None:
        task.apply_async(args=args, **options)
    else:
        app.send_task(name, args=args, **options)
