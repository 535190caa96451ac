"""Retraining triggers: the due-model scan, drift, and the outbox relay.

Targets: the due-model scan over 10,000 registered models < 1 s; drift for 50 features x 10,000 rows
< 200 ms per model; the outbox relay >= 1,000 events/s to the broker.

Run (RabbitMQ at CELERY_BROKER_URL, default amqp://guest:guest@127.0.0.1:5672//; a PostgreSQL
database of its own, clm_bench_triggers, is created):
    .venv/bin/python benchmarks/bench_triggers.py
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
from _django import setup

N_MODELS = 10_000
N_EVENTS = 20_000
RUNS = 7


def timed(fn: Callable[[], object], runs: int = RUNS) -> tuple[float, float, object]:
    """(median, min) wall time in seconds over `runs` calls, and the last result."""
    timings, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings), min(timings), result


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


# ---------------------------------------------------------------------------------------------


def seed_models() -> None:
    """10,000 model lines, each with one completed job created 0-400 hours ago."""
    from django.db import connection

    from registry.models import JobStatus, RegisteredModel, TrainingJob

    fleet = RegisteredModel.objects.filter(symbol__regex=r"^S[0-9]{5}$")
    if fleet.count() == TrainingJob.objects.filter(model__in=fleet).count() == N_MODELS:
        return
    TrainingJob.objects.filter(model__in=fleet).delete()
    fleet.delete()
    types = ["xgboost", "lightgbm", "nhits", "patchtst", "rl_v2", "rl_v3"]
    models = RegisteredModel.objects.bulk_create(
        RegisteredModel(
            model_id=f"{types[i % 6]}-s{i:05d}-1h".replace("_", "-"),
            model_type=types[i % 6],
            symbol=f"S{i:05d}",
            timeframe="1h",
        )
        for i in range(N_MODELS)
    )
    TrainingJob.objects.bulk_create(
        TrainingJob(
            model=m, model_type=m.model_type, symbol=m.symbol, timeframe="1h",
            trigger_reason="manual", status=JobStatus.COMPLETED,
        )
        for m in models
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE registry_trainingjob SET created_at = now() - random() * interval '400 hours'"
        )


def bench_scan() -> None:
    from django.db import transaction

    from registry.models import RegisteredModel
    from training.retraining.scheduler import due_models, periodic_scan

    seed_models()
    models = RegisteredModel.objects.count()
    median, best, due = timed(lambda: due_models())
    print(
        f"due-model scan over {models:,} models (finds {len(due):,} due): "
        f"median {ms(median)}, min {ms(best)} ({RUNS} runs)  [target < 1 s]"
    )

    # The whole periodic scan, queueing 100 jobs (the default cap) through the trigger handlers;
    # rolled back so every run sees the same fleet. Dispatch to the broker is left out: it
    # happens after commit, which never comes here.
    def scan_and_roll_back():
        with transaction.atomic():
            scan = periodic_scan(max_jobs=100)
            transaction.set_rollback(True)
        return scan

    median, best, scan = timed(scan_and_roll_back, runs=3)
    print(
        f"periodic scan queueing {scan.created} jobs of {scan.due:,} due: median {ms(median)}, "
        f"min {ms(best)} (3 runs; {ms(median / max(scan.created, 1))} per job)"
    )


def bench_drift() -> None:
    from training.retraining.monitors.drift import feature_drift

    rng = np.random.default_rng(0)
    reference = rng.normal(size=(10_000, 50))
    current = rng.normal(size=(10_000, 50))
    current[:, :10] += 0.6  # ten features shifted by 0.6 standard deviations
    names = [f"f{i}" for i in range(50)]
    feature_drift(reference, current, names)  # warm up
    median, best, result = timed(lambda: feature_drift(reference, current, names), runs=11)
    print(
        f"drift, 50 features x 10,000 reference and 10,000 current rows: median {ms(median)}, "
        f"min {ms(best)} (11 runs; score {result.drift_score:.2f})  [target < 200 ms]"
    )


def bench_drift_monitor() -> None:
    """One model end to end: bars from PostgreSQL, features, drift, report and trigger rows."""
    from registry import services
    from registry.models import ModelVersion
    from training.data.bars import bars_frame, bars_import
    from training.data.features import validate_feature_spec
    from training.data.synthetic import generate_bars
    from training.models import Bar, RetrainPolicy
    from training.retraining.monitors.services import drift_monitor_run

    bars, _ = generate_bars(20_000, seed=4)
    if Bar.objects.filter(symbol="BENCHDRIFT").count() != 20_000:
        bars_import(frame=bars_frame(bars), symbol="BENCHDRIFT", timeframe="1h")
    model = services.registered_model_get_or_create(
        model_type="xgboost", symbol="BENCHDRIFT", timeframe="1h"
    )
    version = ModelVersion.objects.filter(model=model).first()
    if version is None:
        stamp = lambda i: datetime.fromtimestamp(int(bars.timestamp[i].astype("int64")), tz=UTC)  # noqa: E731
        version = services.model_version_register(
            model=model, params={}, feature_spec=validate_feature_spec(None),
            training_metrics={}, manifest={}, train_start=stamp(0), train_end=stamp(12_000),
        )  # fmt: skip
    # Measured, not acted on: a drifted report is recorded as skipped instead of queueing a job.
    RetrainPolicy.objects.filter(model_type="xgboost").update(auto_train_on_drift=False)
    median, best, report = timed(lambda: drift_monitor_run(version=version), runs=5)
    print(
        f"drift monitor for one model end to end ({len(report.features)} features, "
        f"{report.n_reference:,} reference rows, {report.n_current} current rows, from "
        f"PostgreSQL): median {ms(median)}, min {ms(best)} (5 runs)"
    )


def bench_relay() -> None:
    from django.conf import settings
    from kombu import Connection, Queue

    from registry.models import OutboxEvent
    from training.retraining.events import events_exchange, outbox_relay

    OutboxEvent.objects.all().delete()
    payload = {"version": 3, "job_id": str(uuid.uuid4()), "training_metrics": {"loss": 0.1}}
    OutboxEvent.objects.bulk_create(
        OutboxEvent(event_type="model_trained", model_id=f"xgboost-s{i % 100:05d}-1h",
                    payload=payload)
        for i in range(N_EVENTS)
    )  # fmt: skip
    # A durable subscriber queue, so every message is routed and written to disk by the broker.
    with Connection(settings.CELERY_BROKER_URL) as conn:
        channel = conn.channel()
        events_exchange()(channel).declare()
        queue = Queue(
            "bench-triggers-subscriber", exchange=events_exchange(), routing_key="#", durable=True
        )(channel)
        queue.declare()
        queue.purge()
        started = time.perf_counter()
        result = outbox_relay(max_batches=N_EVENTS)
        seconds = time.perf_counter() - started
        routed = queue.queue_declare(passive=True).message_count
        queue.delete()
    assert result.published == N_EVENTS and not result.error, result
    assert routed == N_EVENTS, routed
    print(
        f"outbox relay of {N_EVENTS:,} events (batches of 500, confirmed once per batch on AMQP, "
        f"persistent, to a durable queue): {seconds:.2f} s = {N_EVENTS / seconds:,.0f} events/s  "
        "[target >= 1,000 events/s]"
    )


def main() -> None:
    os.environ.setdefault("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
    setup("clm_bench_triggers")
    bench_scan()
    bench_drift()
    bench_drift_monitor()
    bench_relay()


if __name__ == "__main__":
    main()
