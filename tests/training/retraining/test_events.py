"""The event bus on the real broker: the outbox relay and the incoming-event consumer."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator

import pytest
from django.conf import settings
from django.db import OperationalError
from kombu import Connection, Producer, Queue
from prometheus_client import REGISTRY

from clm_project.celery import IncomingEventsStep
from clm_project.celery import app as celery_app
from registry import services
from registry.models import OutboxEvent, TrainingJob
from training.models import TriggerRecord
from training.retraining import events
from training.retraining.events import (
    RelayResult,
    events_exchange,
    message_receive,
    outbox_relay,
)
from training.tasks import relay_outbox

pytestmark = pytest.mark.django_db


@pytest.fixture
def subscriber(broker) -> Iterator[Callable[[], list]]:
    """A queue bound to every event on the exchange, on each broker; calling it drains what
    arrived."""
    with Connection(settings.CELERY_BROKER_URL) as conn:
        channel = conn.channel()
        events_exchange()(channel).declare()
        queue = Queue(
            f"{settings.CLM_QUEUE_PREFIX}subscriber-{uuid.uuid4().hex[:8]}",
            exchange=events_exchange(),
            routing_key="#",
            auto_delete=True,
        )(channel)
        queue.declare()

        def drain() -> list:
            messages = []
            while (message := queue.get(no_ack=True)) is not None:
                messages.append(message)
            return messages

        try:
            yield drain
        finally:
            queue.delete()


def unreachable(url: str) -> str:
    """A URL of the same broker kind on a port where nothing listens."""
    return (
        "redis://127.0.0.1:1/0" if url.startswith("redis") else "amqp://guest:guest@127.0.0.1:1//"
    )


def jobs_created(*symbols: str) -> list[str]:
    """One training_job_created outbox event per symbol; their ids, oldest first."""
    for symbol in symbols:
        services.training_job_create(
            request=services.JobRequest(model_type="xgboost", symbol=symbol, timeframe="1h"),
            dispatch=False,
        )
    return [
        str(pk) for pk in OutboxEvent.objects.order_by("created_at").values_list("pk", flat=True)
    ]


# ---------------------------------------------------------------------------------------------
# Outgoing


def test_the_relay_publishes_each_event_with_the_envelope_and_marks_it(subscriber):
    ids = jobs_created("AAA", "BBB", "CCC")
    assert outbox_relay(batch_size=2) == RelayResult(published=3)
    messages = subscriber()
    assert [json.loads(m.body)["event_id"] for m in messages] == ids  # oldest first
    first = messages[0]
    body = json.loads(first.body)
    row = OutboxEvent.objects.get(pk=ids[0])
    assert body == {
        "schema_version": 1,
        "event_id": ids[0],
        "event_type": "training_job_created",
        "occurred_at": row.created_at.isoformat(),
        "model_id": "xgboost-aaa-1h",
        "payload": row.payload,
    }
    assert first.delivery_info["routing_key"] == "training_job_created.xgboost-aaa-1h"
    assert first.content_type == "application/json"
    assert first.properties["message_id"] == ids[0]
    assert first.properties["delivery_mode"] == 2
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()
    assert set(OutboxEvent.objects.values_list("attempts", flat=True)) == {1}
    assert outbox_relay() == RelayResult(published=0) and subscriber() == []


def test_a_broker_outage_delays_events_and_loses_none(subscriber, settings):
    jobs_created("AAA", "BBB")
    broker = settings.CELERY_BROKER_URL
    settings.CELERY_BROKER_URL = unreachable(broker)
    down = outbox_relay()
    assert down.published == 0 and down.error
    rows = OutboxEvent.objects.all()
    assert all(r.published_at is None and r.attempts == 1 and r.last_error for r in rows)

    settings.CELERY_BROKER_URL = broker
    assert outbox_relay().published == 2
    assert len(subscriber()) == 2
    assert set(OutboxEvent.objects.values_list("last_error", flat=True)) == {""}


def test_a_batch_that_fails_midway_marks_what_the_broker_took(subscriber, monkeypatch):
    ids = jobs_created("AAA", "BBB", "CCC")
    publish, calls = Producer.publish, []

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise ConnectionResetError("broker went away")
        return publish(self, *args, **kwargs)

    monkeypatch.setattr(Producer, "publish", failing)
    assert outbox_relay() == RelayResult(1, "ConnectionResetError: broker went away")
    # The first was confirmed (AMQP) or pushed (Redis) before the failure: delivered and marked.
    assert [json.loads(m.body)["event_id"] for m in subscriber()] == ids[:1]
    waiting = OutboxEvent.objects.filter(published_at__isnull=True).order_by("created_at")
    assert [str(pk) for pk in waiting.values_list("pk", flat=True)] == ids[1:]
    assert waiting.first().last_error == "ConnectionResetError: broker went away"
    monkeypatch.setattr(Producer, "publish", publish)
    assert outbox_relay().published == 2
    assert [json.loads(m.body)["event_id"] for m in subscriber()] == ids[1:]


def test_on_rabbitmq_only_what_the_broker_confirmed_is_marked(settings):
    """A full queue that rejects publishes makes RabbitMQ nack them (publisher confirms)."""
    ids = jobs_created("AAA", "BBB", "CCC")
    with Connection(settings.CELERY_BROKER_URL) as conn:
        channel = conn.channel()
        events_exchange()(channel).declare()
        full = Queue(
            f"{settings.CLM_QUEUE_PREFIX}one-slot-{uuid.uuid4().hex[:8]}",
            exchange=events_exchange(),
            routing_key="#",
            auto_delete=True,
            queue_arguments={"x-max-length": 1, "x-overflow": "reject-publish"},
        )(channel)
        full.declare()
        try:
            result = outbox_relay()
            assert result.published == 1 and result.error.startswith("PublishNacked"), result
            waiting = OutboxEvent.objects.filter(published_at__isnull=True)
            assert sorted(str(pk) for pk in waiting.values_list("pk", flat=True)) == sorted(ids[1:])
            assert full.get(no_ack=True) is not None  # room again: the rest go through
            again = outbox_relay()
            assert again.published == 1 and again.error.startswith("PublishNacked"), again
        finally:
            full.delete()
    assert outbox_relay() == RelayResult(published=1)
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()


def test_a_failed_relay_run_is_a_failed_task_and_counted(subscriber, settings):
    jobs_created("AAA")
    failures = REGISTRY.get_sample_value("clm_outbox_relay_failures_total") or 0.0
    broker = settings.CELERY_BROKER_URL
    settings.CELERY_BROKER_URL = unreachable(broker)
    with pytest.raises(events.OutboxRelayError, match="stopped after 0 events"):
        relay_outbox()
    assert REGISTRY.get_sample_value("clm_outbox_relay_failures_total") == failures + 1
    settings.CELERY_BROKER_URL = broker
    assert relay_outbox() == {"published": 1, "error": ""}
    assert len(subscriber()) == 1


def test_the_relay_task_reports_what_it_did(subscriber):
    jobs_created("AAA")
    assert relay_outbox() == {"published": 1, "error": ""}
    assert len(subscriber()) == 1


# ---------------------------------------------------------------------------------------------
# Incoming


def envelope(event_type: str, payload: dict, **extra) -> bytes:
    return json.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "event_type": event_type,
            "occurred_at": "2026-01-05T10:00:00+00:00",
            "source": "risk-service",
            "payload": payload,
            **extra,
        }
    ).encode()


@pytest.fixture
def model(db) -> str:
    job, _ = services.training_job_create(
        request=services.JobRequest(
            model_type="xgboost", symbol="BTCUSDT", timeframe="1h", params={"max_depth": 3}
        ),
        dispatch=False,
    )
    services.training_job_cancel(job_id=job.pk)
    return job.model.model_id


def test_a_drift_event_from_the_broker_queues_a_job(model):
    body = envelope("drift_detected", {"drift_score": 0.7}, model_id=model)
    [result] = message_receive(body=body, routing_key=f"drift_detected.{model}")
    assert result.outcome == "created"
    record = result.record
    assert (record.source, record.requested_by) == ("broker", "risk-service")
    assert record.event_id == json.loads(body)["event_id"]
    job = result.job
    assert job.trigger_reason == "drift_detected" and job.params == {"max_depth": 3}
    assert job.trigger_context["occurred_at"] == "2026-01-05T10:00:00+00:00"

    [again] = message_receive(body=body, routing_key=f"drift_detected.{model}")
    assert again.duplicate and again.record.pk == record.pk
    assert TriggerRecord.objects.count() == 1
    assert TrainingJob.objects.filter(trigger_reason="drift_detected").count() == 1


def test_regime_and_manual_events_from_the_broker(model, bar_add):
    bar_add("ETHUSDT", "1d")
    [regime] = message_receive(
        body=envelope("regime_change", {"new_regime": "bear", "symbol": "BTCUSDT"}),
        routing_key="regime_change",
    )
    assert regime.outcome == "created" and regime.job.trigger_reason == "regime_change"
    [manual] = message_receive(
        body=envelope(
            "manual_training", {"model_type": "lightgbm", "symbol": "ETHUSDT", "timeframe": "1d"}
        ),
        routing_key="manual_training.lightgbm",
    )
    assert manual.outcome == "created" and manual.record.model_key == "lightgbm-ethusdt-1d"


@pytest.mark.parametrize(
    ("body", "routing", "code", "says"),
    [
        (b"{not json", "drift_detected", "invalid", "body is not JSON"),
        (b"\xff\xfe\x00", "drift_detected", "invalid", "body is not JSON"),
        (b"[1, 2]", "drift_detected", "invalid", "not a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "drift_detected", "invalid", "body is not JSON"),
        (b'{"payload": "x"}', "drift_detected", "invalid", "payload an object"),
        (envelope("launch_rockets", {}), "launch_rockets", "unknown_event_type", "unknown event"),
        (envelope("drift_detected", {"model_id": "m"}), "drift_detected", "invalid", "drift_score"),
        (
            envelope("drift_detected", {"model_id": "m", "drift_score": "high"}),
            "drift_detected.m",
            "invalid",
            "valid number",
        ),
        (envelope("drift_detected", {"drift_score": 1}, model_id="m"), "x", "unknown_model", "m"),
        (
            b'{"event_type": "drift_detected", "event_id": "a\\u0000",'
            b' "payload": {"model_id": "m\\u0000", "drift_score": NaN}}',
            "drift_detected",
            "invalid",
            "Null characters are not allowed",
        ),
    ],
)
def test_malformed_events_are_rejected_with_a_reason_and_recorded(body, routing, code, says):
    [result] = message_receive(body=body, routing_key=routing)
    assert result.outcome == "rejected"
    record = TriggerRecord.objects.get()
    assert (record.source, record.code) == ("broker", code)
    assert says in record.reason
    assert not TrainingJob.objects.exists()


class FakeMessage:
    def __init__(self, body: bytes, routing_key: str = "drift_detected") -> None:
        self.body = body
        self.delivery_info = {"routing_key": routing_key}
        self.acked = self.requeued = False

    def ack(self) -> None:
        self.acked = True

    def requeue(self) -> None:
        self.requeued = True


@pytest.fixture
def keep_connection(monkeypatch):
    """The consumer closes stale connections first; inside a test that would end the test's
    transaction."""
    monkeypatch.setattr(events, "close_old_connections", lambda: None)


def test_the_consumer_acks_everything_it_handled_and_never_raises(
    model, monkeypatch, keep_connection
):
    good = FakeMessage(envelope("drift_detected", {"drift_score": 0.9}, model_id=model))
    events._on_message(good)
    assert good.acked and TriggerRecord.objects.get().outcome == "created"
    bad = FakeMessage(b"\x00garbage")
    events._on_message(bad)
    assert bad.acked and TriggerRecord.objects.filter(outcome="rejected").count() == 1

    def boom(**kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(events, "message_receive", boom)
    buggy = FakeMessage(b"{}")
    events._on_message(buggy)
    assert buggy.acked
    assert "handling failed: RuntimeError: a bug" in TriggerRecord.objects.latest("id").reason


def test_the_consumer_requeues_while_the_database_is_away(monkeypatch):
    def database_down(**kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(events, "message_receive", database_down)
    monkeypatch.setattr(events, "DB_RETRY_DELAY_S", 0.0)
    message = FakeMessage(b"{}")
    events._on_message(message)
    assert message.requeued and not message.acked


def test_every_worker_consumes_the_incoming_queue(settings):
    assert IncomingEventsStep in celery_app.steps["consumer"]
    with Connection(settings.CELERY_BROKER_URL) as conn:
        [consumer] = IncomingEventsStep(parent=None).get_consumers(conn.channel())
        [queue] = consumer.queues
        assert queue.name == settings.CLM_EVENTS_INCOMING_QUEUE and queue.durable
        assert queue.name == f"{settings.CLM_QUEUE_PREFIX}clm.incoming"
        assert sorted(b.routing_key for b in queue.bindings) == [
            "bars.#", "drift_detected.#", "manual_training.#", "performance_degraded.#",
            "regime_change.#",
        ]  # fmt: skip
        settings.CLM_EVENTS_CONSUME = False
        assert IncomingEventsStep(parent=None).get_consumers(conn.channel()) == []
