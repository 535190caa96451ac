"""GET /metrics: figures against hand-counted rows, access control, broker and database failures."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import FieldError
from django.db import DatabaseError
from django.test import Client
from django.utils import timezone
from kombu import Connection, Exchange, Queue

from clm_project import metrics_collectors
from registry import services
from registry.models import ModelStatus, OutboxEvent
from tests.conftest import version_add
from training.models import DriftReport, MonitorStatus, PerformanceReport, TriggerRecord
from training.promotion.models import Experiment, ShadowComparison

from .conftest import scrape, total, value

pytestmark = pytest.mark.django_db

NOT_LOOPBACK = {"REMOTE_ADDR": "10.1.2.3"}


def _job(model_type: str, symbol: str, trigger: str) -> services.JobRequest:
    request = services.JobRequest(
        model_type=model_type, symbol=symbol, timeframe="1h", trigger_reason=trigger
    )
    job, _ = services.training_job_create(request=request, dispatch=False)
    return job


def test_database_figures_match_the_rows(staff_client):
    v1 = version_add(symbol="BTCUSDT", status=ModelStatus.PRODUCTION, sharpe=1.8)
    v2 = version_add(symbol="BTCUSDT", status=ModelStatus.CANDIDATE, sharpe=2.1)
    services.model_version_promote(model_id=v2.model.model_id, version=2, actor="test")
    services.model_version_rollback(model_id=v2.model.model_id, target_version=1, actor="test")
    version_add(model_type="lightgbm", symbol="ETHUSDT", status=ModelStatus.FAILED, passed=False)

    model, now = v1.model, timezone.now()
    stale = DriftReport.objects.create(
        model=model, version=v1, status=MonitorStatus.OK, drift_score=0.9, threshold=0.3
    )
    DriftReport.objects.filter(pk=stale.pk).update(created_at=now - timedelta(hours=2))
    DriftReport.objects.create(
        model=model, version=v1, status=MonitorStatus.OK, drift_score=0.25, threshold=0.3
    )
    DriftReport.objects.create(model=model, version=v1, status=MonitorStatus.ERROR, threshold=0.3)
    PerformanceReport.objects.create(
        model=model, version=v1, status=MonitorStatus.OK, rolling_sharpe=0.7, max_drawdown=0.12,
        threshold=0.5,
    )  # fmt: skip

    running = _job("xgboost", "BTCUSDT", "manual")
    services.training_job_claim(job_id=running.pk)
    services.training_job_progress(job_id=running.pk, step="train", progress=0.6)
    _job("lightgbm", "ETHUSDT", "drift_detected")
    for source, reason, outcome in [
        ("api", "manual", "created"), ("api", "manual", "created"),
        ("monitor", "drift_detected", "skipped"),
    ]:  # fmt: skip
        TriggerRecord.objects.create(source=source, trigger_reason=reason, outcome=outcome)

    waiting = OutboxEvent.objects.filter(published_at__isnull=True).order_by("created_at")
    OutboxEvent.objects.filter(pk=waiting.last().pk).update(published_at=now)
    OutboxEvent.objects.filter(pk=waiting.first().pk).update(created_at=now - timedelta(minutes=5))
    unpublished = waiting.count()  # one fewer: the newest is published now

    found = scrape(staff_client)

    assert value(found, "clm_database_metrics_error") == 0
    jobs = "clm_training_jobs"
    assert value(found, jobs, status="in_progress", model_type="xgboost", trigger="manual") == 1
    assert (
        value(found, jobs, status="pending", model_type="lightgbm", trigger="drift_detected") == 1
    )
    assert value(found, "clm_training_job_progress", model_id=model.model_id, step="train") == 0.6
    versions = "clm_model_versions"
    assert value(found, versions, status="production", model_type="xgboost") == 1
    assert value(found, versions, status="retired", model_type="xgboost") == 1
    assert value(found, versions, status="failed", model_type="lightgbm") == 1
    assert value(found, "clm_evaluations_total", model_type="xgboost", passed="true") == 2
    assert value(found, "clm_evaluations_total", model_type="lightgbm", passed="false") == 1
    assert value(found, "clm_gate_failures_total", model_type="lightgbm", gate="sharpe") == 1
    # Every model type and gate exists from the start, at 0, so that its first failure counts.
    assert value(found, "clm_gate_failures_total", model_type="xgboost", gate="sharpe") == 0
    assert value(found, "clm_promotions_total", model_type="rl_v3") == 0
    assert value(found, "clm_promotions_total", model_type="xgboost") == 2
    assert value(found, "clm_rollbacks_total", model_type="xgboost") == 1

    production = {"model_id": model.model_id, "model_type": "xgboost"}
    assert value(found, "clm_production_version", **production, symbol="BTCUSDT") == 1
    assert value(found, "clm_production_sharpe", **production) == 1.8
    assert value(found, "clm_production_max_drawdown", **production) == 0.08
    assert value(found, "clm_production_drift_score", **production) == 0.25
    assert value(found, "clm_production_live_sharpe", **production) == 0.7
    assert value(found, "clm_production_live_max_drawdown", **production) == 0.12
    v1.refresh_from_db()
    promoted = value(found, "clm_production_promoted_timestamp_seconds", **production)
    assert promoted == pytest.approx(v1.promoted_at.timestamp())
    assert value(found, "clm_production_sharpe", model_type="lightgbm") is None

    assert total(found, "clm_triggers_total", source="api", outcome="created") == 2
    assert total(found, "clm_triggers_total", reason="drift_detected", outcome="skipped") == 1
    assert value(found, "clm_outbox_unpublished") == unpublished
    assert 300 <= value(found, "clm_outbox_lag_seconds") < 360


def test_empty_outbox_has_no_lag(staff_client):
    found = scrape(staff_client)
    assert value(found, "clm_outbox_unpublished") == 0
    assert value(found, "clm_outbox_lag_seconds") == 0


def test_pipeline_steps_and_jobs_fill_the_histograms(staff_client, monkeypatch):
    """Process-local instruments (no multiprocess directory): counted around run_job."""
    from training import pipeline

    monkeypatch.setattr(pipeline, "_fetch_data", _fail_fetch)
    job = _job("xgboost", "SOLUSDT", "manual")
    before = scrape(staff_client)
    assert pipeline.run_job(job_id=str(job.pk)) == "failed"
    after = scrape(staff_client)

    def grew(name: str, **labels: str) -> float:
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    steps = "clm_pipeline_step_duration_seconds_count"
    assert grew(steps, step="start", model_type="xgboost") == 1
    assert grew(steps, step="fetch_data", model_type="xgboost") == 0  # failed steps are not timed
    jobs = "clm_training_job_duration_seconds_count"
    assert grew(jobs, model_type="xgboost", status="failed") == 1
    assert grew(jobs, model_type="xgboost", status="completed") == 0


def _fail_fetch(run) -> None:
    raise RuntimeError("no data today")


# ---------------------------------------------------------------------------------------------
# Who may read /metrics


def test_loopback_reads_without_a_token(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 200  # the test client is 127.0.0.1
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    refused = client.get("/metrics", **NOT_LOOPBACK)
    assert refused.status_code == 403 and b"METRICS_TOKEN" in refused.content


def test_a_token_is_required_once_set_even_on_loopback(client, settings):
    settings.METRICS_TOKEN = "s3cret-token"
    refused = client.get("/metrics")
    assert refused.status_code == 401 and refused["WWW-Authenticate"].startswith("Bearer")
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 401
    right = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token", **NOT_LOOPBACK)
    assert right.status_code == 200 and b"clm_training_jobs" in right.content


def test_staff_sessions_read_anywhere_other_users_do_not(settings, staff_client):
    settings.METRICS_TOKEN = "s3cret-token"
    assert staff_client.get("/metrics", **NOT_LOOPBACK).status_code == 200
    plain = Client()
    plain.force_login(User.objects.create_user("plain", password="pw-plain-123"))
    assert plain.get("/metrics", **NOT_LOOPBACK).status_code == 401


def test_only_reads_are_served(staff_client):
    assert staff_client.post("/metrics").status_code == 405


# ---------------------------------------------------------------------------------------------
# The broker and the database failing


def test_queue_depth_is_what_waits_on_the_broker(staff_client, settings):
    name = f"clm-metrics-test-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name), routing_key=name, durable=False)
    settings.CELERY_TASK_QUEUES = (queue,)
    with Connection(settings.CELERY_BROKER_URL) as conn:
        producer = conn.Producer()
        for n in range(3):
            producer.publish({"n": n}, exchange=queue.exchange, routing_key=name, declare=[queue])
        try:
            found = scrape(staff_client)
        finally:
            queue(conn.default_channel).delete()
    assert value(found, "clm_queue_messages", queue=name) == 3
    assert value(found, "clm_queue_consumers", queue=name) == 0
    assert value(found, "clm_queue_depth_error", queue=name) == 0


def test_an_unknown_queue_is_empty(staff_client, settings):
    settings.CELERY_TASK_QUEUES = (Queue(f"clm-never-declared-{uuid.uuid4().hex[:8]}"),)
    found = scrape(staff_client)
    (sample,) = found["clm_queue_messages"]
    assert sample.value == 0 and value(found, "clm_queue_depth_error") == 0


def test_an_unreachable_broker_is_a_gauge_not_an_error(staff_client, settings):
    settings.CELERY_BROKER_URL = "amqp://guest:guest@127.0.0.1:9//"
    started = time.monotonic()
    found = scrape(staff_client)
    assert time.monotonic() - started < 5
    assert value(found, "clm_queue_depth_error", queue="default") == 1
    assert value(found, "clm_queue_depth_error", queue="training") == 1
    assert "clm_queue_messages" not in found or not found["clm_queue_messages"]


def test_without_a_broker_there_are_no_queues(staff_client, settings):
    settings.CELERY_BROKER_URL = ""
    assert "clm_queue_depth_error" not in scrape(staff_client)


def test_a_failing_database_is_a_gauge_not_an_error(staff_client, monkeypatch):
    def unreachable() -> list:
        raise DatabaseError("connection lost")

    monkeypatch.setattr(metrics_collectors, "_job_families", unreachable)
    found = scrape(staff_client)
    assert value(found, "clm_database_metrics_error") == 1
    assert "clm_training_jobs" not in found
    assert "clm_outbox_unpublished" not in found  # not asked: it would wait on the database too
    assert "clm_queue_depth_error" in found


def test_a_broken_section_leaves_the_others(staff_client, monkeypatch):
    def broken() -> list:
        raise FieldError("no such field")

    monkeypatch.setattr(metrics_collectors, "_version_families", broken)
    found = scrape(staff_client)
    assert value(found, "clm_database_metrics_error") == 1
    assert "clm_model_versions" not in found
    assert "clm_training_jobs" in found and "clm_outbox_unpublished" in found


def test_shadow_and_experiment_verdicts(staff_client):
    production = version_add(status=ModelStatus.PRODUCTION)
    model = production.model
    design = {
        "start_after": timezone.now(), "fee": 0.0005, "periods_per_year": 8760, "min_bars": 100,
        "max_bars": 400, "looks": 4, "alpha": 0.05,
    }  # fmt: skip
    ended = [("completed", "promote"), ("completed", "retire"), ("completed", "retire")]
    for status, decision in [*ended, ("active", "")]:
        shadow = version_add(status=ModelStatus.SHADOW)
        ShadowComparison.objects.create(
            model=model, shadow=shadow, production=production, status=status, decision=decision,
            min_trades=10, n_bars=100, p_value=0.2 if status == "active" else None, **design,
        )  # fmt: skip
    for status, decision in [("completed", "keep_production"), ("running", "")]:
        Experiment.objects.create(
            model=model, status=status, decision=decision, n_bars=300, p_value=0.04, **design
        )
    running = Experiment.objects.get(status="running")

    found = scrape(staff_client)
    verdicts = "clm_shadow_verdicts_total"
    assert value(found, verdicts, model_type="xgboost", decision="retire") == 2
    assert value(found, verdicts, model_type="xgboost", decision="promote") == 1
    under_way = {"model_id": model.model_id, "version": str(shadow.version)}
    assert value(found, "clm_shadow_progress", **under_way) == 0.25
    assert value(found, "clm_shadow_p_value", **under_way) == 0.2
    experiments = "clm_experiment_verdicts_total"
    assert value(found, experiments, model_type="xgboost", decision="keep_production") == 1
    assert value(found, "clm_experiment_progress", experiment=str(running.pk)) == 0.75
    assert value(found, "clm_experiment_p_value", experiment=str(running.pk)) == 0.04
