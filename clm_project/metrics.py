"""Prometheus instruments updated by the processes that do the work: web and Celery workers.

Worker metrics reach Prometheus through prometheus_client's multiprocess mode: when
PROMETHEUS_MULTIPROC_DIR is set (to the same directory for gunicorn and every Celery worker on the
host, before they start) each process writes its samples to memory-mapped files there and the web's
`/metrics` merges them (clm_project.metrics_views). One scrape target, one protected endpoint, and
it works for gunicorn's and Celery's pre-forked children alike. Without the variable each process
keeps its own samples in memory (fine for tests and a single-process demo). See
docs/observability/README.md.

What the database already knows (jobs by status, production models' figures, promotions, outbox
lag) is not counted here: clm_project.metrics_collectors reads it at scrape time.

Recording a sample must never break the work it measures, so the helpers log and carry on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram

logger = logging.getLogger(__name__)

MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
if MULTIPROC_DIR:
    # The first sample of each process creates its file here; a missing directory would fail it.
    os.makedirs(MULTIPROC_DIR, exist_ok=True)

# Steps last from milliseconds (bookkeeping) to an hour or two (training a deep model on 2 cores).
STEP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
JOB_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 900, 1200, 1800, 2400, 3600, 7200, 14400)
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200)

PIPELINE_STEP_SECONDS = Histogram(
    "clm_pipeline_step_duration_seconds",
    "Wall time of a training pipeline step that finished, by step and model type.",
    ["step", "model_type"],
    buckets=STEP_BUCKETS,
)
TRAINING_JOB_SECONDS = Histogram(
    "clm_training_job_duration_seconds",
    "Wall time of a training job from its claim to its end, by model type and outcome.",
    ["model_type", "status"],
    buckets=JOB_BUCKETS,
)
CELERY_TASKS = Counter(
    "clm_celery_tasks",
    "Celery tasks that finished, by task name and final state (success, failure, retry).",
    ["task", "state"],
)
CELERY_TASK_SECONDS = Histogram(
    "clm_celery_task_duration_seconds",
    "Wall time of Celery tasks, by task name.",
    ["task"],
    buckets=TASK_BUCKETS,
)
CELERY_TASKS_RUNNING = Gauge(
    "clm_celery_tasks_running",
    "Celery tasks executing now, by task name (summed over live worker processes).",
    ["task"],
    multiprocess_mode="livesum",
)


JOB_OUTCOMES = ("completed", "failed")
TASK_STATES = ("success", "failure", "retry")


def series_initialise(*, model_types: Sequence[str], tasks: Sequence[str] = ()) -> None:
    """Create, at 0, the labelled series the dashboard and the alerts take `increase()` of.

    A series born at its first sample has no earlier point, so `increase()` and `rate()` miss
    that first job failure: every process that may record one starts them at 0 (each model
    type's job outcomes; each task's final states when `tasks` are given).
    """
    try:
        for model_type in model_types:
            for status in JOB_OUTCOMES:
                TRAINING_JOB_SECONDS.labels(model_type=model_type, status=status)
        for task in tasks:
            for state in TASK_STATES:
                CELERY_TASKS.labels(task=task, state=state)
    except Exception:
        logger.warning("could not initialise the metric series", exc_info=True)


def pipeline_step_observe(*, step: str, model_type: str, seconds: float) -> None:
    try:
        PIPELINE_STEP_SECONDS.labels(step=step, model_type=model_type).observe(seconds)
    except Exception:
        logger.warning("could not record the duration of step %s", step, exc_info=True)


def training_job_observe(*, model_type: str, status: str, seconds: float) -> None:
    try:
        TRAINING_JOB_SECONDS.labels(model_type=model_type, status=status).observe(seconds)
    except Exception:
        logger.warning("could not record a job duration", exc_info=True)


OUTBOX_RELAY_FAILURES = Counter(
    "clm_outbox_relay_failures",
    "Outbox relay runs stopped by a broker error (their events wait for a later run).",
)


def outbox_relay_failure_count() -> None:
    try:
        OUTBOX_RELAY_FAILURES.inc()
    except Exception:
        logger.warning("could not count a relay failure", exc_info=True)


LIFECYCLE_OUTCOMES = Counter(
    "clm_lifecycle_outcomes",
    "Per-model steps of the lifecycle passes (shadow, experiment, rollback, monitors) and of the "
    "periodic scan, by pass and outcome: what a fanned-out pass did, summed over its tasks.",
    ["lifecycle_pass", "outcome"],
)


def lifecycle_outcomes_count(lifecycle_pass: str, counts: dict[str, int]) -> None:
    try:
        for outcome, n in counts.items():
            if n:
                LIFECYCLE_OUTCOMES.labels(lifecycle_pass=lifecycle_pass, outcome=outcome).inc(n)
    except Exception:
        logger.warning("could not count a lifecycle outcome", exc_info=True)
