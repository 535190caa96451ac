"""Acceptance: an external drift_detected message, sent over the broker as another service would,
leads to a job, a trained, evaluated and promoted version, and the events a subscriber of the
exchange receives.

A real Celery worker (tests/conftest.py: live_worker) consumes the incoming queue and trains; the
relay is the same function the `training.relay_outbox` beat task runs, called here in a loop.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict

import pytest
from django.conf import settings
from kombu import Connection, Producer, Queue

from registry.models import EvaluationResult, JobStatus, ModelStatus, OutboxEvent, TrainingJob
from registry.services import JobRequest, training_job_cancel, training_job_create
from tests.training.conftest import store_bars
from training.models import TriggerRecord
from training.promotion.models import PromotionPolicy
from training.retraining.events import events_exchange, incoming_queue, outbox_relay

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TERMINAL = {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}
TIMEOUT_S = 300


def test_a_drift_event_over_the_broker_retrains_and_subscribers_hear_of_it(live_worker):
    store_bars("BTCUSDT", 6_000, seed=11)
    # Gates any version passes, so the run ends in a promotion (a tiny model on 6,000 bars may
    # miss the default gates, which is the pipeline's business, not the event bus's).
    PromotionPolicy.objects.create(
        model_type="xgboost", min_sharpe=-100.0, min_win_rate=0.0, min_profit_factor=0.0,
        max_drawdown=1.0, min_trades=0,
    )  # fmt: skip
    # The model line and its recipe (tiny budget); nothing trained yet.
    recipe, _ = training_job_create(
        request=JobRequest(
            model_type="xgboost", symbol="BTCUSDT", timeframe="1h",
            params={"n_estimators": 60, "max_depth": 3},
        ),
        dispatch=False,
    )  # fmt: skip
    training_job_cancel(job_id=recipe.pk)
    model_id = recipe.model.model_id
    event_id = str(uuid.uuid4())

    with Connection(settings.CELERY_BROKER_URL) as conn:
        channel = conn.channel()
        exchange = events_exchange()(channel)
        exchange.declare()
        incoming = incoming_queue()(channel)
        incoming.declare()
        incoming.purge()  # nothing left over from an earlier, interrupted run
        subscriber = Queue(
            f"e2e-subscriber-{uuid.uuid4().hex[:8]}",
            exchange=events_exchange(),
            routing_key=f"*.{model_id}",
            exclusive=True,
            auto_delete=True,
        )(channel)
        subscriber.declare()

        producer = Producer(channel, exchange=exchange, auto_declare=False)
        producer.publish(
            b"this is not an event",
            routing_key="drift_detected.garbage",
            content_type="text/plain",
            content_encoding="utf-8",
        )
        producer.publish(
            json.dumps(
                {
                    "event_id": event_id,
                    "event_type": "drift_detected",
                    "occurred_at": "2026-01-05T10:00:00+00:00",
                    "source": "feature-store",
                    "model_id": model_id,
                    "payload": {"drift_score": 0.8},
                }
            ).encode(),
            routing_key=f"drift_detected.{model_id}",
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,
        )

        received: dict[str, list[dict]] = defaultdict(list)
        job = None
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            job = TrainingJob.objects.filter(trigger_reason="drift_detected").first()
            done = job is not None and job.status in TERMINAL
            outbox_relay()
            while (message := subscriber.get(no_ack=True)) is not None:
                body = json.loads(message.body)
                received[body["event_type"]].append(body)
            if done:
                break
            time.sleep(1.0)

    assert job is not None, "the drift event did not lead to a job"
    assert job.status == JobStatus.COMPLETED, (job.status, job.step, job.error_message)

    trigger = TriggerRecord.objects.get(event_id=event_id)
    assert (trigger.source, trigger.outcome, trigger.job_id) == ("broker", "created", job.pk)
    assert trigger.requested_by == "feature-store"
    assert job.params == {"n_estimators": 60, "max_depth": 3}
    assert job.trigger_context["drift_score"] == 0.8

    garbage = TriggerRecord.objects.get(outcome="rejected")
    assert (garbage.source, garbage.code) == ("broker", "invalid")
    assert "body is not JSON" in garbage.reason

    version = TrainingJob.objects.get(pk=job.pk).version
    evaluation = EvaluationResult.objects.get(version=version)
    [evaluated] = received["model_evaluated"]
    assert evaluated["payload"]["version"] == version.version
    assert evaluated["payload"]["passed"] is evaluation.passed
    assert evaluated["model_id"] == model_id and evaluated["schema_version"] == 1
    assert OutboxEvent.objects.filter(pk=evaluated["event_id"]).exists()
    assert [e["payload"]["version"] for e in received["model_trained"]] == [version.version]
    assert evaluation.passed and version.status == ModelStatus.PRODUCTION
    [promoted] = received["model_promoted"]
    assert promoted["payload"]["version"] == version.version
    assert promoted["payload"]["previous_version"] is None
    created = {e["payload"]["job_id"] for e in received["training_job_created"]}
    assert created == {str(recipe.pk), str(job.pk)}
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()
