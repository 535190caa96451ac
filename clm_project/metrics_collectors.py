"""Metrics read at scrape time: what the database and the broker know right now.

The database is the record of jobs, versions, promotions and events, so these figures are right
whichever process changed them and survive restarts. Counters here are counts of append-only rows
(audit, evaluations, trigger records), which only grow, so Prometheus' `rate()` and `increase()`
apply. Each scrape runs a fixed number of queries (a dozen), whatever the number of models and
versions: counts are single GROUP BY aggregates, and the per-model figures come from the production
versions alone (one per model) with their latest evaluation joined and their latest monitor
reports found through the (model, created_at) indexes.

Neither collector ever raises: a database or broker that does not answer shows as an error gauge
(`clm_database_metrics_error`, `clm_queue_depth_error`), never as a failed scrape. The database's
figures come in independent sections, so a broken one leaves the others in place.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import product
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, Min, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

logger = logging.getLogger(__name__)

QUEUE_TIMEOUT_S = 1.0
# The gates training.promotion.gates.apply_gates can record on an evaluation.
GATES = ("sharpe", "win_rate", "profit_factor", "max_drawdown", "trades", "dsr")


def _gauge(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels)


def _counter(name: str, documentation: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, labels=labels)


def _counts_with_zeros(
    family: CounterMetricFamily, counts: dict[tuple[str, ...], int], *axes: Iterable[str]
) -> CounterMetricFamily:
    """Add `counts` to `family`, and 0 for every combination of `axes` not counted yet.

    A series that exists from the first scrape, at 0, lets `increase()` see its first step:
    otherwise the dashboard and the alerts miss each label's first event.
    """
    every = {combo: 0 for combo in product(*axes)}
    for labels, n in {**every, **counts}.items():
        family.add_metric(list(labels), n)
    return family


def _model_types() -> list[str]:
    from registry.models import ModelType

    return list(ModelType.values)


# ---------------------------------------------------------------------------------------------
# The database


class DatabaseCollector:
    """Jobs, versions, production models, lifecycle counters, triggers, the outbox, shadow and
    experiment verdicts."""

    def collect(self) -> Iterator[Metric]:
        sections = (
            _job_families, _version_families, _production_families, _lifecycle_families,
            _outbox_families, _trigger_families, _verdict_families,
        )  # fmt: skip
        failed = False
        for section in sections:
            try:
                families = section()
            except DatabaseError:  # the database itself: the next sections would wait on it too
                logger.warning("database metrics unavailable", exc_info=True)
                failed = True
                break
            except Exception:
                logger.warning("database metrics %s failed", section.__name__, exc_info=True)
                failed = True
                continue
            yield from families
        error = _gauge(
            "clm_database_metrics_error",
            "1 when some figures could not be read from the database at this scrape (they are "
            "then missing).",
            [],
        )
        error.add_metric([], 1 if failed else 0)
        yield error


def _job_families() -> list[Metric]:
    from registry.models import JobStatus, TrainingJob

    jobs = _gauge(
        "clm_training_jobs",
        "Training jobs by status, model type and trigger reason.",
        ["status", "model_type", "trigger"],
    )
    rows = (
        TrainingJob.objects.values_list("status", "model_type", "trigger_reason")
        .annotate(n=Count("pk"))
        .order_by()
    )
    for status, model_type, trigger, n in rows:
        jobs.add_metric([status, model_type, trigger], n)
    progress = _gauge(
        "clm_training_job_progress",
        "Progress (0-1) of each running job, by model and current step (one per model at most).",
        ["model_id", "model_type", "step"],
    )
    step_started = _gauge(
        "clm_training_job_step_started_timestamp_seconds",
        "When each running job entered the step it is in now (Unix time).",
        ["model_id", "model_type", "step"],
    )
    heartbeat = _gauge(
        "clm_training_job_heartbeat_age_seconds",
        "Seconds since the worker running each job last refreshed its heartbeat.",
        ["model_id", "model_type"],
    )
    now = timezone.now()
    running = TrainingJob.objects.filter(status=JobStatus.IN_PROGRESS).values_list(
        "model__model_id", "model_type", "step", "progress", "step_started_at", "heartbeat_at"
    )
    for model_id, model_type, step, value, step_at, beat_at in running:
        progress.add_metric([model_id, model_type, step], value)
        if step_at is not None:
            step_started.add_metric([model_id, model_type, step], step_at.timestamp())
        if beat_at is not None:
            heartbeat.add_metric([model_id, model_type], (now - beat_at).total_seconds())
    return [jobs, progress, step_started, heartbeat]


def _version_families() -> list[Metric]:
    from registry.models import EvaluationResult, ModelVersion

    versions = _gauge(
        "clm_model_versions", "Model versions by status and model type.", ["status", "model_type"]
    )
    rows = (
        ModelVersion.objects.values_list("status", "model__model_type")
        .annotate(n=Count("pk"))
        .order_by()
    )
    for status, model_type, n in rows:
        versions.add_metric([status, model_type], n)

    evaluations = _counter(
        "clm_evaluations",
        "Out-of-sample evaluations recorded, by model type and whether every gate passed.",
        ["model_type", "passed"],
    )
    gate_failures = _counter(
        "clm_gate_failures",
        "Evaluations that failed a promotion gate, by model type and gate.",
        ["model_type", "gate"],
    )
    per_gate = {
        f"failed_{gate}": Count("pk", filter=Q(**{f"gates__{gate}__passed": False}))
        for gate in GATES
    }
    rows = (
        EvaluationResult.objects.values("version__model__model_type", "passed")
        .annotate(n=Count("pk"), **per_gate)
        .order_by()
    )
    passed_counts: dict[tuple[str, ...], int] = {}
    failures: dict[tuple[str, ...], int] = {}
    for row in rows:
        model_type = row["version__model__model_type"]
        key = (model_type, "true" if row["passed"] else "false")
        passed_counts[key] = passed_counts.get(key, 0) + row["n"]
        for gate in GATES:
            failures[(model_type, gate)] = (
                failures.get((model_type, gate), 0) + row[f"failed_{gate}"]
            )
    types = _model_types()
    _counts_with_zeros(evaluations, passed_counts, types, ("true", "false"))
    _counts_with_zeros(gate_failures, failures, types, GATES)
    return [versions, evaluations, gate_failures]


def _production_families() -> list[Metric]:
    from registry.models import ModelStatus, ModelVersion
    from training.models import DriftReport, MonitorStatus, PerformanceReport

    def latest(table: Any, field: str, **match: Any) -> Subquery:
        return Subquery(
            table.objects.filter(**match).order_by("-created_at", "-id").values(field)[:1]
        )

    # The (model, created_at) indexes find a report in a few rows, however many there are.
    monitored = {"model": OuterRef("model"), "version": OuterRef("pk"), "status": MonitorStatus.OK}
    rows = (
        ModelVersion.objects.filter(status=ModelStatus.PRODUCTION)
        .annotate(
            drift_score=latest(DriftReport, "drift_score", **monitored),
            live_sharpe=latest(PerformanceReport, "rolling_sharpe", **monitored),
            live_drawdown=latest(PerformanceReport, "max_drawdown", **monitored),
        )
        .values_list(
            "model__model_id",
            "model__model_type",
            "model__symbol",
            "model__timeframe",
            "version",
            "promoted_at",
            "latest_evaluation__sharpe",
            "latest_evaluation__max_drawdown",
            "drift_score",
            "live_sharpe",
            "live_drawdown",
        )
    )
    labels = ["model_id", "model_type"]
    version = _gauge(
        "clm_production_version",
        "The version number in production, per model.",
        [*labels, "symbol", "timeframe"],
    )
    promoted = _gauge(
        "clm_production_promoted_timestamp_seconds",
        "When the production version was promoted (Unix time), per model.",
        labels,
    )
    figures = {
        "eval_sharpe": _gauge(
            "clm_production_sharpe",
            "Annualised Sharpe ratio of the production version's latest evaluation.",
            labels,
        ),
        "eval_drawdown": _gauge(
            "clm_production_max_drawdown",
            "Maximum drawdown (0-1) of the production version's latest evaluation.",
            labels,
        ),
        "drift_score": _gauge(
            "clm_production_drift_score",
            "Share of drifted features (0-1) in the production version's latest drift report.",
            labels,
        ),
        "live_sharpe": _gauge(
            "clm_production_live_sharpe",
            "Rolling Sharpe ratio of the production version on live bars (latest report).",
            labels,
        ),
        "live_drawdown": _gauge(
            "clm_production_live_max_drawdown",
            "Maximum drawdown (0-1) of the production version on live bars (latest report).",
            labels,
        ),
    }
    for row in rows:
        (model_id, model_type, symbol, timeframe, number, promoted_at, *values) = row
        version.add_metric([model_id, model_type, symbol, timeframe], number)
        if promoted_at is not None:
            promoted.add_metric([model_id, model_type], promoted_at.timestamp())
        for family, value in zip(figures.values(), values, strict=True):
            if value is not None:
                family.add_metric([model_id, model_type], value)
    return [version, promoted, *figures.values()]


def _lifecycle_families() -> list[Metric]:
    from registry.models import LifecycleAction, LifecycleEvent

    families = {
        LifecycleAction.PROMOTE: _counter(
            "clm_promotions",
            "Promotions to production (audit rows), by model type.",
            ["model_type"],
        ),
        LifecycleAction.ROLLBACK: _counter(
            "clm_rollbacks",
            "Rollbacks to an earlier version (audit rows), by model type.",
            ["model_type"],
        ),
    }
    rows = (
        LifecycleEvent.objects.filter(action__in=list(families))
        .values_list("action", "model__model_type")
        .annotate(n=Count("pk"))
        .order_by()
    )
    counts: dict[str, dict[tuple[str, ...], int]] = {action: {} for action in families}
    for action, model_type, n in rows:
        counts[action][(model_type,)] = n
    for action, family in families.items():
        _counts_with_zeros(family, counts[action], _model_types())
    return list(families.values())


def _outbox_families() -> list[Metric]:
    from registry.models import OutboxEvent

    waiting = OutboxEvent.objects.filter(published_at__isnull=True).aggregate(
        n=Count("pk"), oldest=Min("created_at")
    )
    unpublished = _gauge("clm_outbox_unpublished", "Outbox events not yet published.", [])
    unpublished.add_metric([], waiting["n"])
    lag = _gauge(
        "clm_outbox_lag_seconds",
        "Age of the oldest unpublished outbox event (0 when every event is published).",
        [],
    )
    oldest = waiting["oldest"]
    lag.add_metric([], 0.0 if oldest is None else (timezone.now() - oldest).total_seconds())
    return [unpublished, lag]


def _trigger_families() -> list[Metric]:
    from registry.models import TriggerReason
    from training.models import TriggerOutcome, TriggerRecord, TriggerSource

    triggers = _counter(
        "clm_triggers",
        "Retraining triggers received or raised, by source, reason and outcome.",
        ["source", "reason", "outcome"],
    )
    rows = (
        TriggerRecord.objects.values_list("source", "trigger_reason", "outcome")
        .annotate(n=Count("pk"))
        .order_by()
    )
    counts = {(source, reason, outcome): n for source, reason, outcome, n in rows}
    _counts_with_zeros(
        triggers, counts, TriggerSource.values, TriggerReason.values, TriggerOutcome.values
    )
    return [triggers]


def _verdict_counter(
    name: str, documentation: str, ended: QuerySet, decisions: Iterable[str]
) -> Metric:
    """Ended comparisons or experiments counted by model type and decision."""
    counter = _counter(name, documentation, ["model_type", "decision"])
    rows = ended.values_list("model__model_type", "decision").annotate(n=Count("pk")).order_by()
    counts: dict[tuple[str, ...], int] = {}
    for model_type, decision, n in rows:
        key = (model_type, decision or "none")
        counts[key] = counts.get(key, 0) + n
    return _counts_with_zeros(counter, counts, _model_types(), decisions)


def _verdict_families() -> list[Metric]:
    """Shadow comparisons and A/B experiments: verdicts so far, and the ones under way."""
    from training.promotion.models import (
        ComparisonStatus,
        Experiment,
        ExperimentDecision,
        ExperimentStatus,
        ShadowComparison,
        ShadowDecision,
    )

    shadow_verdicts = _verdict_counter(
        "clm_shadow_verdicts",
        "Shadow comparisons that ended, by model type and decision.",
        ShadowComparison.objects.exclude(status=ComparisonStatus.ACTIVE),
        [d for d in ShadowDecision.values if d != ShadowDecision.CONTINUE],
    )
    shadow = ["model_id", "model_type", "version"]
    shadow_progress = _gauge(
        "clm_shadow_progress",
        "Bars shadowed so far over the comparison's maximum, per shadow version under way.",
        shadow,
    )
    shadow_p = _gauge(
        "clm_shadow_p_value",
        "p-value of the latest test of shadow against production, per shadow version under way.",
        shadow,
    )
    running = ShadowComparison.objects.filter(status=ComparisonStatus.ACTIVE).values_list(
        "model__model_id", "model__model_type", "shadow__version", "n_bars", "max_bars", "p_value"
    )
    for model_id, model_type, version, n_bars, max_bars, p_value in running:
        labels = [model_id, model_type, str(version)]
        shadow_progress.add_metric(labels, n_bars / max_bars if max_bars else 0.0)
        if p_value is not None:
            shadow_p.add_metric(labels, p_value)

    experiment_verdicts = _verdict_counter(
        "clm_experiment_verdicts",
        "A/B experiments that ended, by model type and decision.",
        Experiment.objects.exclude(status=ExperimentStatus.RUNNING),
        ExperimentDecision.values,
    )
    experiment = ["model_id", "model_type", "experiment"]
    experiment_progress = _gauge(
        "clm_experiment_progress",
        "Bars observed so far over the experiment's maximum, per running experiment.",
        experiment,
    )
    experiment_p = _gauge(
        "clm_experiment_p_value",
        "p-value of the latest test of the best candidate against production, per running "
        "experiment.",
        experiment,
    )
    running = Experiment.objects.filter(status=ExperimentStatus.RUNNING).values_list(
        "model__model_id", "model__model_type", "pk", "n_bars", "max_bars", "p_value"
    )
    for model_id, model_type, pk, n_bars, max_bars, p_value in running:
        labels = [model_id, model_type, str(pk)]
        experiment_progress.add_metric(labels, n_bars / max_bars if max_bars else 0.0)
        if p_value is not None:
            experiment_p.add_metric(labels, p_value)
    return [
        shadow_verdicts, shadow_progress, shadow_p,
        experiment_verdicts, experiment_progress, experiment_p,
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The broker


@dataclass(frozen=True)
class QueueDepth:
    messages: int
    consumers: int | None  # None: the broker could not say


def queue_depths(*, url: str, queues: list[str], timeout: float) -> dict[str, QueueDepth | None]:
    """Ask the broker how many messages wait in each queue (passive declare); None: unknown.

    A queue the broker does not have yet holds nothing: it is declared by the first message sent
    to it or the first worker that consumes it. Redis keeps no consumers (it always reports 0), so
    there the workers are asked which queues they consume, over Celery's broadcast (remote
    control, on by default): one reply per worker, as RabbitMQ counts one consumer per worker.
    """
    from kombu import Connection

    depths: dict[str, QueueDepth | None] = dict.fromkeys(queues)
    options = {
        "read_timeout": timeout,
        "write_timeout": timeout,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
    }
    try:
        with Connection(url, connect_timeout=timeout, transport_options=options) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
            for name in queues:
                depths[name] = _queue_depth(conn, name)
            if conn.transport.driver_type == "redis":
                depths = _with_worker_consumers(conn, depths, timeout)
    except Exception as exc:  # any transport error: unknown depths, never a failed scrape
        logger.warning("queue depths unavailable: %s: %s", exc.__class__.__name__, exc)
    return depths


def _queue_depth(conn: Any, name: str) -> QueueDepth | None:
    try:
        with conn.channel() as channel:
            _, messages, consumers = channel.queue_declare(queue=name, passive=True)
    except Exception as exc:
        if getattr(exc, "code", None) == 404 or "NOT_FOUND" in str(exc):
            return QueueDepth(0, 0)
        logger.warning("depth of queue %s unavailable: %s", name, exc)
        return None
    return QueueDepth(messages, consumers)


def _with_worker_consumers(
    conn: Any, depths: dict[str, QueueDepth | None], timeout: float
) -> dict[str, QueueDepth | None]:
    """Consumers per queue as the workers that answer within `timeout` report them."""
    from clm_project.celery import app

    try:
        replies = app.control.inspect(timeout=timeout, connection=conn).active_queues() or {}
    except Exception as exc:
        logger.warning("workers' queues unavailable: %s: %s", exc.__class__.__name__, exc)
        replies = None
    counts: Counter[str] = Counter()
    for worker_queues in (replies or {}).values():
        counts.update({queue["name"] for queue in worker_queues or []})
    return {
        name: None
        if depth is None
        else QueueDepth(depth.messages, None if replies is None else counts[name])
        for name, depth in depths.items()
    }


class BrokerQueueCollector:
    """Messages waiting and consumers per Celery queue (CELERY_TASK_QUEUES), asked at scrape.

    The `queue` label is the queue's name without CLM_QUEUE_PREFIX ("default", "training"), so
    dashboards and alerts read the same whatever prefix a deployment uses.
    """

    def collect(self) -> Iterator[Metric]:
        url = settings.CELERY_BROKER_URL
        if not url:
            return  # no broker: tasks run in-process (eager), nothing ever waits
        queues = [queue.name for queue in settings.CELERY_TASK_QUEUES]
        depths = queue_depths(url=url, queues=queues, timeout=QUEUE_TIMEOUT_S)
        messages = _gauge(
            "clm_queue_messages", "Messages waiting in the Celery queue (ready).", ["queue"]
        )
        consumers = _gauge(
            "clm_queue_consumers",
            "Workers consuming the Celery queue (RabbitMQ: its consumers; Redis: the workers that "
            "answered a broadcast). Absent when the broker could not say.",
            ["queue"],
        )
        error = _gauge(
            "clm_queue_depth_error",
            "1 when the broker could not tell this queue's depth at this scrape.",
            ["queue"],
        )
        prefix = settings.CLM_QUEUE_PREFIX
        for name, depth in depths.items():
            label = name.removeprefix(prefix) if prefix else name
            error.add_metric([label], 1 if depth is None else 0)
            if depth is not None:
                messages.add_metric([label], depth.messages)
                if depth.consumers is not None:
                    consumers.add_metric([label], depth.consumers)
        yield from (messages, consumers, error)
