"""Trigger handlers and the event endpoints: jobs, joins, skips with reasons, and their records."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from registry import services
from registry.models import JobStatus, TrainingJob
from training.models import RetrainPolicy, TriggerOutcome, TriggerRecord
from training.retraining.triggers import (
    Origin,
    handle_drift_detected,
    handle_performance_degraded,
    handle_regime_change,
    retrain_policy_for,
    trigger_training,
)

pytestmark = pytest.mark.django_db

RECIPE = {"n_estimators": 60, "max_depth": 3}


def model_with_job(
    model_type: str = "xgboost",
    symbol: str = "BTCUSDT",
    *,
    status: str = JobStatus.COMPLETED,
    age: timedelta = timedelta(days=30),
) -> TrainingJob:
    """A model line whose last job (params RECIPE, seed 7) was created `age` ago in `status`."""
    job, _ = services.training_job_create(
        request=services.JobRequest(
            model_type=model_type, symbol=symbol, timeframe="1h", params=RECIPE, seed=7
        ),
        dispatch=False,
    )
    TrainingJob.objects.filter(pk=job.pk).update(status=status, created_at=timezone.now() - age)
    job.refresh_from_db()
    return job


def policy(model_type: str = "xgboost", **changes) -> RetrainPolicy:
    row = RetrainPolicy.objects.get(model_type=model_type)
    for name, value in changes.items():
        setattr(row, name, value)
    row.save()
    return row


# ---------------------------------------------------------------------------------------------
# Policies


def test_policies_carry_the_original_design_defaults():
    hours = dict(RetrainPolicy.objects.values_list("model_type", "periodic_interval_hours"))
    assert hours == {
        "xgboost": 168, "lightgbm": 168, "nhits": 336, "patchtst": 336, "rl_v2": 24,
        "rl_v3": 24, "other": 168,
    }  # fmt: skip
    xgb = RetrainPolicy.objects.get(model_type="xgboost")
    assert xgb.enabled and xgb.auto_train_on_drift and xgb.sharpe_threshold == 0.5
    assert not RetrainPolicy.objects.get(model_type="other").enabled
    RetrainPolicy.objects.filter(model_type="rl_v2").delete()
    fallback = retrain_policy_for("rl_v2")
    assert fallback.pk is None and fallback.periodic_interval_hours == 24


# ---------------------------------------------------------------------------------------------
# Handlers


def test_drift_over_the_threshold_queues_a_job_with_the_models_recipe():
    previous = model_with_job()
    result = handle_drift_detected("xgboost-btcusdt-1h", 0.6, origin=Origin(event_id="e-1"))
    assert result.outcome == TriggerOutcome.CREATED
    job = result.job
    assert job.pk != previous.pk and job.status == JobStatus.PENDING
    assert job.trigger_reason == "drift_detected"
    assert job.params == RECIPE and job.seed == 7
    assert job.trigger_context["drift_score"] == 0.6
    assert job.trigger_context["priority"] == 6 and job.trigger_context["event_id"] == "e-1"
    record = TriggerRecord.objects.get()
    assert (record.model_key, record.job_id, record.priority) == (
        "xgboost-btcusdt-1h", job.pk, 6,
    )  # fmt: skip
    assert record.event_type == "drift_detected" and record.payload == {"drift_score": 0.6}


def test_drift_below_the_threshold_is_skipped_and_recorded():
    model_with_job()
    result = handle_drift_detected("xgboost-btcusdt-1h", 0.1)
    assert result.outcome == TriggerOutcome.SKIPPED and result.job is None
    assert result.record.code == "threshold"
    assert "0.1 is below the policy's drift threshold 0.3" in result.record.reason
    assert TrainingJob.objects.count() == 1


def test_a_trigger_for_a_model_with_an_active_job_joins_it():
    active = model_with_job(status=JobStatus.IN_PROGRESS, age=timedelta(minutes=5))
    result = handle_performance_degraded("xgboost-btcusdt-1h", 0.1)
    assert result.outcome == TriggerOutcome.JOINED and result.job.pk == active.pk
    active.refresh_from_db()
    assert [t["trigger_reason"] for t in active.joined_triggers] == ["performance_degraded"]
    assert active.joined_triggers[0]["trigger_context"]["sharpe_ratio"] == 0.1
    assert TrainingJob.objects.count() == 1


def test_cooldown_then_budget_pace_automatic_triggers():
    model_with_job(age=timedelta(hours=2))
    cooled = handle_drift_detected("xgboost-btcusdt-1h", 0.9)
    assert cooled.outcome == TriggerOutcome.SKIPPED and cooled.record.code == "cooldown"
    assert "2.0 h ago" in cooled.record.reason and "wait 6 h" in cooled.record.reason

    policy(cooldown_hours=1.0, max_retrains_per_day=2)
    assert handle_drift_detected("xgboost-btcusdt-1h", 0.9).outcome == TriggerOutcome.CREATED
    TrainingJob.objects.update(
        status=JobStatus.COMPLETED, created_at=timezone.now() - timedelta(hours=3)
    )
    spent = handle_drift_detected("xgboost-btcusdt-1h", 0.9)
    assert spent.outcome == TriggerOutcome.SKIPPED and spent.record.code == "budget"
    assert "2 jobs in the last 24 h" in spent.record.reason

    # Cancelled jobs are not retraining: they count neither for the cooldown nor the budget.
    TrainingJob.objects.update(status=JobStatus.CANCELLED)
    assert handle_drift_detected("xgboost-btcusdt-1h", 0.9).outcome == TriggerOutcome.CREATED


def test_policy_switches_skip_with_their_reason():
    model_with_job()
    policy(auto_train_on_drift=False)
    off = handle_drift_detected("xgboost-btcusdt-1h", 0.9)
    assert (off.outcome, off.record.code) == (TriggerOutcome.SKIPPED, "auto_off")
    policy(enabled=False)
    disabled = handle_performance_degraded("xgboost-btcusdt-1h", -1.0)
    assert (disabled.outcome, disabled.record.code) == (TriggerOutcome.SKIPPED, "disabled")
    assert TrainingJob.objects.count() == 1


def test_unknown_models_are_rejected_and_recorded():
    result = handle_drift_detected("nope-1h", 0.9, origin=Origin(source="broker"))
    assert (result.outcome, result.record.code) == (TriggerOutcome.REJECTED, "unknown_model")
    assert TriggerRecord.objects.get().model_key == "nope-1h"


def test_performance_degraded_compares_with_the_sharpe_threshold():
    model_with_job()
    fine = handle_performance_degraded("xgboost-btcusdt-1h", 0.8)
    assert fine.outcome == TriggerOutcome.SKIPPED and fine.record.code == "threshold"
    bad = handle_performance_degraded("xgboost-btcusdt-1h", 0.2)
    assert bad.outcome == TriggerOutcome.CREATED
    assert bad.job.trigger_reason == "performance_degraded"
    assert bad.record.priority == 7


def test_regime_change_retrains_the_models_of_a_symbol():
    model_with_job("xgboost", "BTCUSDT")
    model_with_job("lightgbm", "BTCUSDT")
    model_with_job("xgboost", "ETHUSDT")
    results = handle_regime_change("uptrend:high_vol", symbol="btcusdt")
    assert sorted(r.record.model_key for r in results) == [
        "lightgbm-btcusdt-1h", "xgboost-btcusdt-1h",
    ]  # fmt: skip
    assert {r.outcome for r in results} == {TriggerOutcome.CREATED}
    assert {r.job.trigger_reason for r in results} == {"regime_change"}

    named = handle_regime_change("range:low_vol", ["xgboost-ethusdt-1h", "missing-1h"])
    assert [(r.record.model_key, r.outcome) for r in named] == [
        ("xgboost-ethusdt-1h", TriggerOutcome.CREATED),
        ("missing-1h", TriggerOutcome.REJECTED),
    ]
    nobody = handle_regime_change("range:low_vol", symbol="DOGEUSDT")
    assert [(r.outcome, r.record.code) for r in nobody] == [(TriggerOutcome.SKIPPED, "no_models")]


def test_manual_requests_bypass_cooldown_and_budget_but_join_active_jobs():
    model_with_job(age=timedelta(minutes=1))
    policy(max_retrains_per_day=0)
    first = trigger_training(
        model_type="xgboost", symbol="btcusdt", timeframe="1h", params={"max_depth": 2}
    )
    assert first.outcome == TriggerOutcome.CREATED and first.job.params == {"max_depth": 2}
    assert first.record.priority == 9
    second = trigger_training(model_type="xgboost", symbol="BTCUSDT", timeframe="1h")
    assert second.outcome == TriggerOutcome.JOINED and second.job.pk == first.job.pk
    bad = trigger_training(model_type="xgboost", symbol="BTC/USDT!", timeframe="1h")
    assert bad.outcome == TriggerOutcome.REJECTED and "invalid symbol" in bad.record.reason


@pytest.mark.django_db(transaction=True)
def test_concurrent_triggers_of_one_model_make_one_job():
    model_with_job()
    results, barrier = [], threading.Barrier(4)

    def fire() -> None:
        barrier.wait()
        try:
            results.append(handle_drift_detected("xgboost-btcusdt-1h", 0.9).outcome)
        finally:
            connection.close()

    threads = [threading.Thread(target=fire) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["created", "joined", "joined", "joined"]
    assert TrainingJob.objects.filter(status__in=["pending", "queued"]).count() == 1


# ---------------------------------------------------------------------------------------------
# REST


def test_post_drift_detected_answers_202_with_the_job(operator_client):
    model_with_job()
    response = operator_client.post(
        "/clm/events/drift_detected",
        {"model_id": "xgboost-btcusdt-1h", "drift_score": 0.5, "event_id": "drift-42"},
        format="json",
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["event_type"] == "drift_detected" and body["event_id"] == "drift-42"
    [result] = body["results"]
    assert result["outcome"] == "created" and result["duplicate"] is False
    assert result["job"]["trigger_reason"] == "drift_detected"
    assert result["job"]["params"] == RECIPE
    record = TriggerRecord.objects.get(pk=result["trigger_id"])
    assert record.source == "api" and record.requested_by == "operator"

    again = operator_client.post(
        "/clm/events/drift_detected",
        {"model_id": "xgboost-btcusdt-1h", "drift_score": 0.5, "event_id": "drift-42"},
        format="json",
    ).json()
    assert again["results"][0]["duplicate"] is True
    assert again["results"][0]["trigger_id"] == result["trigger_id"]
    assert TriggerRecord.objects.count() == 1


def test_post_events_answer_joins_and_skips(operator_client):
    model_with_job(status=JobStatus.QUEUED, age=timedelta(minutes=1))
    joined = operator_client.post(
        "/clm/events/performance_degraded",
        {"model_id": "xgboost-btcusdt-1h", "sharpe_ratio": 0.1},
        format="json",
    ).json()["results"][0]
    assert joined["outcome"] == "joined" and joined["job"]["status"] == "queued"
    skipped = operator_client.post(
        "/clm/events/drift_detected",
        {"model_id": "xgboost-btcusdt-1h", "drift_score": 0.01},
        format="json",
    )
    assert skipped.status_code == 202
    [result] = skipped.json()["results"]
    assert result["outcome"] == "skipped" and result["code"] == "threshold"
    assert result["job"] is None


def test_malformed_events_answer_400_and_are_recorded(operator_client):
    response = operator_client.post(
        "/clm/events/drift_detected", {"model_id": "x", "drift_score": -1}, format="json"
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid" and "drift_score" in body["errors"]
    record = TriggerRecord.objects.get(pk=body["trigger_id"])
    assert record.outcome == "rejected" and record.code == "invalid"
    assert "drift_score" in record.reason

    both = operator_client.post(
        "/clm/events/regime_change",
        {"new_regime": "bull", "symbol": "BTCUSDT", "affected_models": ["a"]},
        format="json",
    )
    assert both.status_code == 400 and "non_field_errors" in both.json()["errors"]
    unknown = operator_client.post(
        "/clm/events/drift_detected", {"model_id": "nope", "drift_score": 1}, format="json"
    )
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
    assert TriggerRecord.objects.filter(outcome="rejected").count() == 3


def test_bodies_that_are_not_json_answer_400_and_are_recorded(operator_client):
    deep = operator_client.post(
        "/clm/events/drift_detected", "[" * 100_000 + "]" * 100_000, content_type="application/json"
    )
    assert deep.status_code == 400
    nested = {"a": {}}
    for _ in range(60):
        nested = {"a": nested}
    odd = operator_client.post(
        "/clm/events/drift_detected", {"model_id": nested, "x": "\x00"}, format="json"
    )
    assert odd.status_code == 400
    stored = TriggerRecord.objects.get(pk=odd.json()["trigger_id"]).payload["data"]
    assert stored["x"] == "\ufffd" and "nested too deeply" in str(stored["model_id"])
    assert TriggerRecord.objects.filter(outcome="rejected").count() == 2


def test_event_endpoints_need_the_training_permission(reader_client, anon_client):
    payload = {"model_id": "xgboost-btcusdt-1h", "drift_score": 0.5}
    assert (
        reader_client.post("/clm/events/drift_detected", payload, format="json").status_code == 403
    )
    assert anon_client.post("/clm/events/drift_detected", payload, format="json").status_code in (
        401,
        403,
    )
    assert TriggerRecord.objects.count() == 0


def test_post_regime_change_and_manual_training(operator_client, bar_add):
    bar_add("ETHUSDT", "4h")
    model_with_job()
    regime = operator_client.post(
        "/clm/events/regime_change",
        {"new_regime": "downtrend:high_vol", "symbol": "BTCUSDT", "timeframe": "1h"},
        format="json",
    )
    assert regime.status_code == 202
    assert [r["outcome"] for r in regime.json()["results"]] == ["created"]
    manual = operator_client.post(
        "/clm/events/manual_training",
        {"model_type": "lightgbm", "symbol": "ethusdt", "timeframe": "4h"},
        format="json",
    )
    assert manual.status_code == 202, manual.content
    [result] = manual.json()["results"]
    assert result["model_id"] == "lightgbm-ethusdt-4h" and result["outcome"] == "created"
    assert result["trigger_reason"] == "manual"


def test_get_triggers_lists_records_with_filters(operator_client):
    model_with_job()
    handle_drift_detected("xgboost-btcusdt-1h", 0.9)
    handle_drift_detected("xgboost-btcusdt-1h", 0.01)
    handle_drift_detected("unknown-1h", 0.9)
    rows = operator_client.get("/clm/triggers").json()["results"]
    assert [r["outcome"] for r in rows] == ["rejected", "skipped", "created"]
    skipped = operator_client.get("/clm/triggers?outcome=skipped").json()
    assert skipped["count"] == 1 and skipped["results"][0]["code"] == "threshold"
    created = operator_client.get("/clm/triggers?model_id=xgboost-btcusdt-1h&outcome=created")
    assert created.json()["results"][0]["job_status"] == "pending"
    assert operator_client.get("/clm/triggers?outcome=bogus").status_code == 400
