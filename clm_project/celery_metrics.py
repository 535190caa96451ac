"""Celery task metrics and log context from Celery's signals, in whatever process runs the task.

Connected once by clm_project.celery. In a worker the handlers run in the pool process that
executes the task; with PROMETHEUS_MULTIPROC_DIR set their samples reach the web's /metrics (see
clm_project.metrics). Every log line a task emits carries its task_id.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import ExitStack
from typing import Any

from celery.signals import (
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
)

from clm_project import metrics
from clm_project.logging import log_context

logger = logging.getLogger(__name__)

# Per running task id: when it started and the log context to close when it ends.
_running: dict[str, tuple[float, ExitStack]] = {}


def _task_started(*, task_id: str, task: Any, **_: Any) -> None:
    stack = ExitStack()
    stack.enter_context(log_context(task_id=task_id))
    _running[task_id] = (time.perf_counter(), stack)
    try:
        metrics.CELERY_TASKS_RUNNING.labels(task=task.name).inc()
    except Exception:
        logger.warning("could not count a started task", exc_info=True)


def _task_finished(*, task_id: str, task: Any, state: str | None = None, **_: Any) -> None:
    started, stack = _running.pop(task_id, (None, None))
    try:
        metrics.CELERY_TASKS_RUNNING.labels(task=task.name).dec()
        metrics.CELERY_TASKS.labels(task=task.name, state=(state or "unknown").lower()).inc()
        if started is not None:
            metrics.CELERY_TASK_SECONDS.labels(task=task.name).observe(
                time.perf_counter() - started
            )
    except Exception:
        logger.warning("could not count a finished task", exc_info=True)
    finally:
        if stack is not None:
            stack.close()


def _process_shutdown(*, pid: int | None = None, **_: Any) -> None:
    """A pool process exits: its `running` gauge stops counting (livesum)."""
    if metrics.MULTIPROC_DIR:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid(), metrics.MULTIPROC_DIR)


def _series_initialise(sender: Any = None, **_: Any) -> None:
    """A worker process starts: its CLM tasks' final states exist at 0 (clm_project.metrics)."""
    from celery import current_app

    from registry.models import ModelType

    tasks = sorted(name for name in current_app.tasks if not name.startswith("celery."))
    metrics.series_initialise(model_types=list(ModelType.values), tasks=tasks)


def connect() -> None:
    worker_init.connect(_series_initialise, weak=False, dispatch_uid="clm-metrics-worker-init")
    worker_process_init.connect(
        _series_initialise, weak=False, dispatch_uid="clm-metrics-process-init"
    )
    task_prerun.connect(_task_started, weak=False, dispatch_uid="clm-metrics-task-prerun")
    task_postrun.connect(_task_finished, weak=False, dispatch_uid="clm-metrics-task-postrun")
    worker_process_shutdown.connect(
        _process_shutdown, weak=False, dispatch_uid="clm-metrics-process-shutdown"
    )
