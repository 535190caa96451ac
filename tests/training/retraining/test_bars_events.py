"""Bars over the broker: the `bars` event on clm.incoming, in-process and on a real worker."""

from __future__ import annotations

import json
import time
import uuid

import numpy as np
import pytest
from django.conf import settings
from django.db import connection
from kombu import Connection, Producer

from tests.conftest import _start_worker, _stop_worker
from training.data.bars import load_bars
from training.models import Bar, TriggerRecord
from training.retraining.events import events_exchange, incoming_queue, message_receive

TIMEOUT_S = 120


def batch(symbol: str, n: int = 5, *, start_hour: int = 0, close: float = 100.0) -> list[dict]:
    return [
        {"time": f"2024-01-0{1 + (start_hour + i) // 24}T{(start_hour + i) % 24:02d}:00:00Z",
         "o": close + i, "h": close + i + 1, "l": close + i - 1, "c": close + i, "v": 3}
        for i in range(n)
    ]  # fmt: skip


def envelope(payload: dict) -> bytes:
    return json.dumps(
        {"event_id": str(uuid.uuid4()), "event_type": "bars", "source": "exchange-feed",
         "payload": payload}
    ).encode()  # fmt: skip


@pytest.mark.django_db
def test_a_bars_event_is_stored_and_a_replay_changes_nothing():
    body = envelope({"symbol": "btcusdt", "timeframe": "1h", "bars": batch("BTCUSDT")})
    assert message_receive(body=body, routing_key="bars.BTCUSDT.1h") == []
    assert message_receive(body=body, routing_key="bars.BTCUSDT.1h") == []
    bars = load_bars("BTCUSDT", "1h")
    np.testing.assert_allclose(bars.close, [100, 101, 102, 103, 104])
    assert not TriggerRecord.objects.exists()


@pytest.mark.django_db
def test_a_csv_batch_over_the_broker():
    csv = "Date,Open,High,Low,Close,Volume\n2024-01-01,10,11,9,10,1\n2024-01-02,10,11,9,10.5,1\n"
    body = envelope({"symbol": "AAPL", "timeframe": "1d", "csv": csv, "tz": "America/New_York"})
    assert message_receive(body=body, routing_key="bars") == []
    assert load_bars("AAPL", "1d").timestamp[0] == np.datetime64("2024-01-01T05:00:00")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("payload", "says"),
    [
        ({"symbol": "X", "timeframe": "1h", "bars": "nope"}, "bars: a list of rows"),
        ({"symbol": "X", "bars": []}, "timeframe: This field is required."),
        ({"symbol": "X", "timeframe": "4h", "bars": batch("X")}, "1h apart (median spacing)"),
        (
            {"symbol": "X", "timeframe": "1h", "bars": [*batch("X", 2), {"time": "later"}]},
            "row 3: timestamp is not a date/time",
        ),
    ],
)
def test_a_malformed_batch_is_recorded_and_nothing_is_stored(payload, says):
    [result] = message_receive(body=envelope(payload), routing_key="bars")
    record = TriggerRecord.objects.get(pk=result.record.pk)
    assert (record.source, record.outcome, record.event_type, record.code) == (
        "broker", "rejected", "bars", "invalid",
    )  # fmt: skip
    assert says in record.reason
    assert record.requested_by == "exchange-feed"
    assert not Bar.objects.exists()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_stores_batches_from_the_broker_and_survives_a_bad_one(purge_queues):
    """A real worker consumes clm.incoming: a malformed batch is recorded, the next ones stored."""
    url = settings.CELERY_BROKER_URL
    bad = batch("ETHUSDT", 3)
    bad[1]["h"] = 1.0
    with Connection(url) as conn:
        channel = conn.channel()
        exchange = events_exchange()(channel)
        exchange.declare()
        incoming_queue()(channel).declare()
        producer = Producer(channel, exchange=exchange, auto_declare=False)
        proc, _ = _start_worker(connection.settings_dict["NAME"])
        try:
            for payload in (
                {"symbol": "ETHUSDT", "timeframe": "1h", "bars": bad},
                {"symbol": "ETHUSDT", "timeframe": "1h", "bars": batch("ETHUSDT", 48)},
                {
                    "symbol": "ETHUSDT",
                    "timeframe": "1h",
                    "bars": batch("ETHUSDT", 24, start_hour=48),
                },
            ):
                producer.publish(
                    envelope(payload), routing_key="bars.ETHUSDT.1h",
                    content_type="application/json", content_encoding="utf-8", delivery_mode=2,
                )  # fmt: skip
            deadline = time.monotonic() + TIMEOUT_S
            while time.monotonic() < deadline and Bar.objects.count() < 72:
                time.sleep(0.5)
        finally:
            _stop_worker(proc)
    assert Bar.objects.filter(symbol="ETHUSDT", timeframe="1h").count() == 72
    rejected = TriggerRecord.objects.get(event_type="bars")
    assert rejected.outcome == "rejected" and "row 2: high is below low" in rejected.reason
