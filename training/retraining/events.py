"""The event bus: CLM's outbox relayed to a topic exchange, and the events other services send CLM.

One topic exchange, `settings.CLM_EVENTS_EXCHANGE` ("clm.events" after CLM_QUEUE_PREFIX, durable),
on the Celery broker. Every message on it, in either direction, is one JSON object (UTF-8, content
type application/json, persistent):

    {"schema_version": 1,
     "event_id": "0b8f...-uuid",                 unique; consumers deduplicate on it
     "event_type": "model_promoted",
     "occurred_at": "2026-01-05T10:00:00.123456+00:00",
     "model_id": "xgboost-btcusdt-1h",           or null
     "payload": {...}}

Outgoing, at least once: the relay (task `training.relay_outbox`, run by celery-beat every few
seconds) publishes unpublished outbox rows oldest first with the routing key
"<event_type>.<model_id>" (e.g. "model_promoted.xgboost-btcusdt-1h"; "none" without a model), the
AMQP message_id set to the event id and the type to the event type. A row is marked published only
after the broker took its message: on RabbitMQ by publisher confirms (the broker's ack of each
message, waited for once per batch), on Redis once the push into every bound queue returned. A
crash in between publishes the row again (duplicates, never losses: deduplicate on `event_id`); a
broker outage leaves the rows unpublished, with `attempts` and `last_error`, until a later run
gets through, and fails the task (counted in `clm_outbox_relay_failures_total`). Subscribers bind
their own durable queues, e.g. "model_promoted.#", "*.xgboost-btcusdt-1h" or "#"; as on any topic
exchange, an event that no queue is bound to is dropped.

Incoming: the durable queue `settings.CLM_EVENTS_INCOMING_QUEUE` ("clm.incoming") is bound to the
exchange with "drift_detected.#", "performance_degraded.#", "regime_change.#" and
"manual_training.#", and every Celery worker consumes it (the IncomingEventsStep bootstep of
clm_project.celery, off where CLM_EVENTS_CONSUME is false). Send the envelope above with routing key
"<event_type>" or "<event_type>.<anything>"; `event_type` in the body wins over the routing key,
`model_id` may sit in the envelope or in the payload, and `source` (optional) names the sender.
The payloads are the REST bodies of /clm/events/<event_type>:

    drift_detected        {"model_id": str, "drift_score": float >= 0}
    performance_degraded  {"model_id": str, "sharpe_ratio": float}
    regime_change         {"new_regime": str, "symbol": str, "timeframe": str (optional)}
                          or {"new_regime": str, "affected_models": [str, ...]}
    manual_training       {"model_type", "symbol", "timeframe", "params", "seed",
                           "window_start", "window_end"} as POST /clm/train

Bars arrive the same way: event type `bars` (routing key "bars" or "bars.<anything>", e.g.
"bars.BTCUSDT.1h"), payload the body of POST /clm/bars:

    bars                  {"symbol": str, "timeframe": str,
                           "bars": [{"timestamp", "open", "high", "low", "close", "volume"}, ...]
                                   or [[timestamp, open, high, low, close, volume], ...],
                           "tz": str (optional), "columns": str (optional), ...}
                          or {"symbol", "timeframe", "csv": "<the text of a CSV file>"}

A batch is read by training.data.ingest and upserted by (symbol, timeframe, timestamp) in one
transaction: all of it or none, and a batch sent twice changes nothing. A refused batch (bad rows,
unknown columns, a spacing that contradicts the timeframe) is recorded as a `rejected` TriggerRecord
whose reason lists the bad rows by number; nothing of it is stored.

Each message is acknowledged once handled. A malformed one (not JSON, unknown type, invalid fields,
unknown model) is acknowledged too, and recorded as a `rejected` TriggerRecord with its reason: it
can never succeed, so it is not redelivered. Only a database outage requeues a message.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, transaction
from kombu import Connection, Consumer, Exchange, Producer, Queue, binding
from kombu.transport.virtual.base import UndeliverableWarning

from clm_project import metrics
from clm_project.exceptions import InvalidInput
from registry import services
from registry.models import OutboxEvent
from training.data.bars import bars_ingest
from training.models import TriggerSource
from training.retraining import triggers
from training.retraining.triggers import Origin, TriggerResult, storable

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
INCOMING_EVENT_TYPES = (
    "drift_detected",
    "performance_degraded",
    "regime_change",
    "manual_training",
)
BARS_EVENT = "bars"
RELAY_BATCH_SIZE = 500
RELAY_MAX_BATCHES = 100
CONNECT_TIMEOUT_S = 2.0
PUBLISH_TIMEOUT_S = 5.0
DB_RETRY_DELAY_S = 1.0
PREVIEW_CHARS = 2_000


def events_exchange() -> Exchange:
    return Exchange(settings.CLM_EVENTS_EXCHANGE, type="topic", durable=True)


def incoming_queue() -> Queue:
    exchange = events_exchange()
    return Queue(
        settings.CLM_EVENTS_INCOMING_QUEUE,
        bindings=[
            binding(exchange, routing_key=f"{t}.#") for t in (*INCOMING_EVENT_TYPES, BARS_EVENT)
        ],
        durable=True,
    )


def event_envelope(event: OutboxEvent) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "event_id": str(event.pk),
        "event_type": event.event_type,
        "occurred_at": event.created_at.isoformat(),
        "model_id": event.model_id or None,
        "payload": event.payload,
    }


def routing_key(event: OutboxEvent) -> str:
    return f"{event.event_type}.{event.model_id or 'none'}"


# ---------------------------------------------------------------------------------------------
# Outgoing: the outbox relay


@dataclass(frozen=True)
class RelayResult:
    published: int
    error: str = ""


class OutboxRelayError(RuntimeError):
    """The relay could not publish every waiting event; the rest wait for the next run."""


class _PublishFailed(Exception):
    def __init__(self, published: int, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.published = published
        self.cause = cause


class PublishNacked(Exception):
    """The broker refused messages (a nack): they were not stored."""


class _Confirms:
    """Publisher confirms on one AMQP channel, waited for once per batch.

    After confirm.select the broker numbers the channel's messages 1, 2, ... and acks (or nacks)
    each, singly or up to a number; waiting once for the whole batch instead of after every
    message is what keeps the relay at thousands of events a second.
    """

    def __init__(self, conn: Connection, channel: Any) -> None:
        self.conn = conn
        self.sent = 0
        self.outstanding: set[int] = set()
        self.acked: set[int] = set()
        self.nacked: set[int] = set()
        channel.events["basic_ack"].add(self._ack)
        channel.events["basic_nack"].add(self._nack)
        channel.confirm_select()

    def published(self) -> int:
        self.sent += 1
        self.outstanding.add(self.sent)
        return self.sent

    def _settle(self, tag: int, multiple: bool, into: set[int]) -> None:
        tags = {t for t in self.outstanding if t <= tag} if multiple else {tag}
        self.outstanding -= tags
        into |= tags

    def _ack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple, self.acked)

    def _nack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple, self.nacked)

    def wait(self, timeout: float) -> None:
        """Until every message sent is acked or nacked; raises on a nack or after `timeout`."""
        deadline = time.monotonic() + timeout
        while self.outstanding:
            left = deadline - time.monotonic()
            if left <= 0:
                unconfirmed = len(self.outstanding)
                raise TimeoutError(f"{unconfirmed} publishes unconfirmed after {timeout}s")
            try:
                self.conn.drain_events(timeout=left)
            except TimeoutError:  # socket.timeout: nothing yet, the deadline decides
                continue
        if self.nacked:
            raise PublishNacked(f"the broker refused {len(self.nacked)} events")


def relay_transport_options(url: str) -> dict[str, Any]:
    """Bounded waits on Redis (publisher confirms on AMQP are per batch: see _Confirms)."""
    if url.split("://", 1)[0] in {"redis", "rediss"}:
        return {
            "socket_timeout": PUBLISH_TIMEOUT_S,
            "socket_connect_timeout": CONNECT_TIMEOUT_S,
        }
    return {}


def outbox_relay(
    *, batch_size: int = RELAY_BATCH_SIZE, max_batches: int = RELAY_MAX_BATCHES
) -> RelayResult:
    """Publish unpublished outbox rows to the exchange, oldest first, `batch_size` at a time.

    Rows are claimed with FOR UPDATE SKIP LOCKED, so relays running side by side never publish the
    same row twice at once. Returns how many were published and the broker error that stopped the
    run, if any (the rows the broker did not take stay unpublished for the next run).
    """
    url = settings.CELERY_BROKER_URL
    if not url:
        return RelayResult(0, "no broker configured (CELERY_BROKER_URL is empty)")
    published = 0
    try:
        with Connection(
            url, connect_timeout=CONNECT_TIMEOUT_S, transport_options=relay_transport_options(url)
        ) as conn:
            # One quick retry at most: the next run, seconds away, is the real retry.
            conn.ensure_connection(max_retries=1, interval_start=0.1, timeout=CONNECT_TIMEOUT_S)
            channel = conn.channel()
            exchange = events_exchange()(channel)
            exchange.declare()
            # Redis answers each push itself; AMQP acknowledges publishes only when asked to.
            confirms = _Confirms(conn, channel) if conn.transport.driver_type == "amqp" else None
            producer = Producer(channel, exchange=exchange, auto_declare=False)
            for _ in range(max_batches):
                count = _relay_batch(producer, confirms, batch_size)
                published += count
                if count < batch_size:
                    break
    except Exception as exc:  # any broker failure: keep the rows, report, let the next run retry
        if isinstance(exc, _PublishFailed):
            published += exc.published
            exc = exc.cause
        error = f"{exc.__class__.__name__}: {exc}"
        logger.warning("outbox relay stopped after %d events: %s", published, error)
        metrics.outbox_relay_failure_count()
        _note_failure(batch_size, error)
        return RelayResult(published, error)
    return RelayResult(published)


def _relay_batch(producer: Producer, confirms: _Confirms | None, batch_size: int) -> int:
    """Publish one batch; mark the rows the broker took, then raise if it did not take them all."""
    failure: BaseException | None = None
    with transaction.atomic():
        rows = list(
            OutboxEvent.objects.select_for_update(skip_locked=True)
            .filter(published_at__isnull=True)
            .order_by("created_at")[:batch_size]
        )
        sent: dict[int, Any] = {}  # confirm number (or position on Redis) -> row id
        try:
            for position, row in enumerate(rows, start=1):
                _publish(producer, row)
                sent[confirms.published() if confirms else position] = row.pk
        except Exception as exc:
            failure = exc
        if confirms is not None and confirms.outstanding:
            # Also after a failed publish: what went out before it may still be confirmed (a dead
            # connection answers nothing, and those rows simply go again).
            try:
                confirms.wait(PUBLISH_TIMEOUT_S)
            except Exception as exc:
                failure = failure or exc
        taken = [pk for tag, pk in sent.items() if confirms is None or tag in confirms.acked]
        if taken:
            services.outbox_events_mark_published(event_ids=taken)
    if failure is not None:
        raise _PublishFailed(len(taken), failure)
    return len(taken)


def _publish(producer: Producer, row: OutboxEvent) -> None:
    with warnings.catch_warnings():
        # Redis: an event no queue is bound to is dropped, as a topic exchange on AMQP drops it.
        warnings.simplefilter("ignore", UndeliverableWarning)
        producer.publish(
            json.dumps(event_envelope(row), separators=(",", ":")).encode(),
            routing_key=routing_key(row),
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,
            message_id=str(row.pk),
            type=row.event_type,
            timestamp=int(row.created_at.timestamp()),
            headers={"schema_version": SCHEMA_VERSION},
            timeout=PUBLISH_TIMEOUT_S,
        )


def _note_failure(batch_size: int, error: str) -> None:
    """Count a failed attempt on the oldest unpublished rows (shown in the admin and API)."""
    with contextlib.suppress(Exception):
        services.outbox_events_mark_failed(limit=batch_size, error=error)


# ---------------------------------------------------------------------------------------------
# Incoming: one entry for REST and broker events


def event_receive(*, event_type: str, data: Any, origin: Origin) -> list[TriggerResult]:
    """Validate an incoming event and hand it to its trigger handler.

    A known event id returns what it caused the first time (nothing new happens). Invalid events
    are recorded as rejected and returned, never raised.
    """
    from training.retraining.api.serializers import INCOMING_SERIALIZERS

    if event_type not in INCOMING_SERIALIZERS:
        return [
            triggers.trigger_rejected(
                origin=origin,
                event_type=event_type,
                code="unknown_event_type",
                text=f"unknown event type {event_type!r}; one of {', '.join(INCOMING_EVENT_TYPES)}",
                payload={"data": storable(data)},
            )
        ]
    seen = triggers.trigger_results_for_event(event_id=origin.event_id)
    if seen:
        return seen
    serializer = INCOMING_SERIALIZERS[event_type](data=data)
    if not serializer.is_valid():
        errors = storable(serializer.errors)
        return [
            triggers.trigger_rejected(
                origin=origin,
                event_type=event_type,
                code="invalid",
                text=_error_sentence(errors),
                payload={"data": storable(data), "errors": errors},
            )
        ]
    data = dict(serializer.validated_data)
    data.pop("event_id", None)  # it travels in the Origin
    return _HANDLERS[event_type](data, origin)


def _drift(data: dict[str, Any], origin: Origin) -> list[TriggerResult]:
    return [triggers.handle_drift_detected(data["model_id"], data["drift_score"], origin=origin)]


def _performance(data: dict[str, Any], origin: Origin) -> list[TriggerResult]:
    return [
        triggers.handle_performance_degraded(data["model_id"], data["sharpe_ratio"], origin=origin)
    ]


def _regime(data: dict[str, Any], origin: Origin) -> list[TriggerResult]:
    return triggers.handle_regime_change(
        data["new_regime"],
        data.get("affected_models"),
        symbol=data.get("symbol"),
        timeframe=data.get("timeframe"),
        origin=origin,
    )


def _manual(data: dict[str, Any], origin: Origin) -> list[TriggerResult]:
    return [triggers.trigger_training(**data, origin=origin)]


_HANDLERS = {
    "drift_detected": _drift,
    "performance_degraded": _performance,
    "regime_change": _regime,
    "manual_training": _manual,
}


def event_id_of(value: Any) -> str:
    """An event id as given (at most 64 characters), or "" when there is none usable."""
    if isinstance(value, str | int) and not isinstance(value, bool):
        text = str(value).strip()
        return text if len(text) <= 64 else ""
    return ""


def _error_sentence(errors: Any) -> str:
    if isinstance(errors, dict):
        parts = [
            f"{name}: {' '.join(map(str, messages if isinstance(messages, list) else [messages]))}"
            for name, messages in errors.items()
        ]
        return "invalid event: " + "; ".join(parts)
    return f"invalid event: {errors}"


def message_receive(*, body: bytes | str, routing_key: str) -> list[TriggerResult]:
    """Handle one message from the incoming queue (see the module docstring for its format)."""
    routed_type = routing_key.split(".", 1)[0]
    broker = Origin(source=TriggerSource.BROKER)
    try:
        envelope = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return [_malformed(broker, routed_type, f"body is not JSON: {exc}", body)]
    if not isinstance(envelope, dict):
        return [_malformed(broker, routed_type, "body is not a JSON object", body)]
    event_type = envelope.get("event_type") or routed_type
    payload = envelope.get("payload", {})
    if not isinstance(event_type, str) or not isinstance(payload, dict):
        return [
            _malformed(broker, routed_type, "event_type must be a string, payload an object", body)
        ]
    data = dict(payload)
    if envelope.get("model_id") is not None and "model_id" not in data:
        data["model_id"] = envelope["model_id"]
    sender = envelope.get("source")
    origin = Origin(
        source=TriggerSource.BROKER,
        event_id=event_id_of(envelope.get("event_id")),
        requested_by=sender[:150] if isinstance(sender, str) else "",
        context={"occurred_at": str(envelope.get("occurred_at") or "")},
    )
    if event_type == BARS_EVENT:
        return bars_receive(data=data, origin=origin)
    return event_receive(event_type=event_type, data=data, origin=origin)


def bars_receive(*, data: dict[str, Any], origin: Origin) -> list[TriggerResult]:
    """Store a batch of bars from the broker; a refused batch is recorded as rejected, with the
    reasons of POST /clm/bars (the same serializer and parser), and nothing of it is stored."""
    from training.data.api import BarsBatchSerializer, BarsOptionsSerializer

    csv = data.get("csv")
    serializer = (BarsOptionsSerializer if isinstance(csv, str) else BarsBatchSerializer)(data=data)
    try:
        if not serializer.is_valid():
            raise InvalidInput(_error_sentence(storable(serializer.errors)))
        options = dict(serializer.validated_data)
        if isinstance(csv, str):
            options["body"] = csv.encode()
        else:
            options["rows"] = options.pop("bars")
        stored, _ = bars_ingest(**options)
    except InvalidInput as exc:  # BarImportError is one: bad rows, columns, options
        summary = {k: storable(data.get(k)) for k in ("symbol", "timeframe") if k in data}
        payload = {**summary, **storable(exc.extra)}
        rejected = triggers.trigger_rejected(
            origin=origin, event_type=BARS_EVENT, code="invalid", text=exc.message, payload=payload
        )
        return [rejected]
    logger.info(
        "bars from the broker: %s %s, %d rows (%d new, %d replaced)",
        stored.symbol, stored.timeframe, stored.rows, stored.inserted, stored.updated,
    )  # fmt: skip
    return []


def _malformed(origin: Origin, event_type: str, text: str, body: bytes | str) -> TriggerResult:
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    return triggers.trigger_rejected(
        origin=origin,
        event_type=event_type,
        code="invalid",
        text=text,
        payload={"body": body[:PREVIEW_CHARS]},
    )


def _on_message(message: Any) -> None:
    """Handle, then acknowledge; a bug or bad data is recorded, never raised into the worker."""
    key = (message.delivery_info or {}).get("routing_key", "")
    try:
        close_old_connections()
        message_receive(body=message.body, routing_key=key)
    except (OperationalError, InterfaceError) as exc:
        # The database is away: the event is fine, so it goes back to the queue (after a pause, so
        # an outage does not spin).
        logger.warning("incoming event not handled, database unavailable (%s); requeued", exc)
        time.sleep(DB_RETRY_DELAY_S)
        message.requeue()
        return
    except Exception as exc:
        logger.exception("incoming event on %r failed; recorded as rejected", key)
        with contextlib.suppress(Exception):
            _malformed(
                Origin(source=TriggerSource.BROKER),
                key.split(".", 1)[0],
                f"handling failed: {exc.__class__.__name__}: {exc}",
                message.body,
            )
    message.ack()


def incoming_consumers(channel: Any) -> list[Consumer]:
    """The consumers of the incoming queue on a worker's channel (see clm_project.celery's
    IncomingEventsStep, which adds them to every worker unless CLM_EVENTS_CONSUME is off)."""
    return [Consumer(channel, queues=[incoming_queue()], on_message=_on_message, prefetch_count=10)]
