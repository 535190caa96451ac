"""POST /clm/bars (JSON rows, CSV and Parquet bodies), coverage and series reads."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.test import APIClient

from tests.training.retraining.test_monitors import production_model
from training.data.bars import load_bars
from training.data.synthetic import generate_bars
from training.models import Bar
from training.retraining.monitors.services import drift_monitor_run

HOURS = pd.date_range("2024-01-01", periods=6, freq="h", tz="UTC")


def json_rows(times=HOURS, close: float = 100.0) -> list[dict]:
    return [
        {"timestamp": t.isoformat(), "open": close, "high": close + 1, "low": close - 1,
         "close": close, "volume": 5}
        for t in times
    ]  # fmt: skip


@pytest.fixture
def feeder_client(db) -> APIClient:
    user = User.objects.create_user("feeder", password="pw-feeder-123")
    user.user_permissions.add(Permission.objects.get(codename="add_bar"))
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.mark.django_db
def test_post_json_rows_upserts_and_is_idempotent(feeder_client):
    body = {"symbol": "btcusdt", "timeframe": "1h", "bars": json_rows()}
    first = feeder_client.post("/clm/bars", body, format="json")
    assert first.status_code == 200, first.json()
    summary = first.json()
    assert (summary["symbol"], summary["rows"], summary["new"], summary["replaced"]) == (
        "BTCUSDT", 6, 6, 0,
    )  # fmt: skip
    assert summary["first"] == "2024-01-01T00:00:00Z"
    assert summary["last"] == "2024-01-01T05:00:00Z"
    again = feeder_client.post("/clm/bars", body, format="json").json()
    assert (again["new"], again["replaced"]) == (0, 6)
    assert Bar.objects.count() == 6
    # An overlapping batch: two bars replaced with new prices, two appended.
    later = pd.date_range("2024-01-01 04:00", periods=4, freq="h", tz="UTC")
    more = {"symbol": "BTCUSDT", "timeframe": "1h", "bars": json_rows(later, close=110.0)}
    answer = feeder_client.post("/clm/bars", more, format="json").json()
    assert (answer["new"], answer["replaced"]) == (2, 2)
    np.testing.assert_allclose(load_bars("BTCUSDT", "1h").close, [100] * 4 + [110] * 4)


@pytest.mark.django_db
def test_bad_rows_answer_400_with_row_numbers_and_store_nothing(feeder_client):
    rows = json_rows()
    rows[2]["high"] = 50.0  # below low
    rows[4]["close"] = "NaN"
    answer = feeder_client.post(
        "/clm/bars", {"symbol": "X", "timeframe": "1h", "bars": rows}, format="json"
    )
    assert answer.status_code == 400
    body = answer.json()
    assert "row 3: high is below low" in body["errors"]["bars"]
    assert "row 5: close is not a finite number" in body["errors"]["bars"]
    assert body["bad_rows"] == 2
    assert Bar.objects.count() == 0
    wrong = feeder_client.post(
        "/clm/bars", {"symbol": "X", "timeframe": "4h", "bars": json_rows()}, format="json"
    )
    assert wrong.status_code == 400
    assert "1h apart" in wrong.json()["detail"]
    missing = feeder_client.post("/clm/bars", {"symbol": "X", "bars": []}, format="json")
    assert missing.status_code == 400 and "timeframe" in missing.json()["errors"]


@pytest.mark.django_db
def test_post_a_csv_or_parquet_body(feeder_client):
    csv = "Date,Open,High,Low,Close,Adj Close,Volume\n" + "".join(
        f"{t:%Y-%m-%d %H:%M},10,11,9,10.5,10.4,100\n" for t in HOURS
    )
    answer = feeder_client.post(
        "/clm/bars?symbol=ETHUSDT&timeframe=1h", csv.encode(), content_type="text/csv"
    )
    assert answer.status_code == 200, answer.json()
    assert answer.json()["new"] == 6
    notes = answer.json()["notes"]
    assert "timestamps: ISO 8601; naive, read as UTC (pass --tz to change)" in notes
    buffer = io.BytesIO()
    pd.DataFrame(json_rows(close=20.0)).to_parquet(buffer)
    parquet = feeder_client.post(
        "/clm/bars?symbol=ETHUSDT&timeframe=1h", buffer.getvalue(),
        content_type="application/octet-stream",
    )  # fmt: skip
    assert parquet.status_code == 200, parquet.json()
    assert parquet.json()["replaced"] == 6
    no_symbol = feeder_client.post("/clm/bars?timeframe=1h", csv.encode(), content_type="text/csv")
    assert no_symbol.status_code == 400 and "symbol" in no_symbol.json()["errors"]
    junk = feeder_client.post(
        "/clm/bars?symbol=X&timeframe=1h", b"\x00\x01garbage", content_type="text/csv"
    )
    assert junk.status_code == 400 and "not UTF-8 text" in junk.json()["detail"]


@pytest.mark.django_db
def test_posting_needs_the_add_bar_permission(reader_client, anon_client):
    body = {"symbol": "X", "timeframe": "1h", "bars": json_rows()}
    assert anon_client.post("/clm/bars", body, format="json").status_code in (401, 403)
    denied = reader_client.post("/clm/bars", body, format="json")
    assert denied.status_code == 403 and "training.add_bar" in denied.json()["detail"]
    assert reader_client.get("/clm/bars").status_code == 200


@pytest.mark.django_db
def test_coverage_lists_each_series_with_its_gaps(feeder_client, reader_client):
    hours = HOURS.delete([2, 3])  # 02:00 and 03:00 missing: one gap of 3h
    for symbol, times in (("GAPPY", hours), ("FULL", HOURS)):
        body = {"symbol": symbol, "timeframe": "1h", "bars": json_rows(times)}
        assert feeder_client.post("/clm/bars", body, format="json").status_code == 200
    coverage = {(c["symbol"], c["timeframe"]): c for c in reader_client.get("/clm/bars").json()}
    full, gappy = coverage[("FULL", "1h")], coverage[("GAPPY", "1h")]
    assert (full["count"], full["gaps"], full["longest_gaps"]) == (6, 0, [])
    assert full["first"] == "2024-01-01T00:00:00Z" and full["last"] == "2024-01-01T05:00:00Z"
    assert (gappy["count"], gappy["gaps"]) == (4, 1)
    assert gappy["longest_gaps"] == [
        {
            "after": "2024-01-01T01:00:00Z",
            "before": "2024-01-01T04:00:00Z",
            "spacing_seconds": 10800,
        }
    ]


@pytest.mark.django_db
def test_series_pages_and_csv(feeder_client, reader_client):
    body = {"symbol": "BTCUSDT", "timeframe": "1h", "bars": json_rows()}
    feeder_client.post("/clm/bars", body, format="json")
    page = reader_client.get(
        "/clm/bars/BTCUSDT/1h?start=2024-01-01T01:00:00Z&end=2024-01-01T05:00:00Z&limit=2"
    ).json()
    assert page["count"] == 4
    assert [b["timestamp"] for b in page["results"]] == [
        "2024-01-01T01:00:00Z", "2024-01-01T02:00:00Z",
    ]  # fmt: skip
    assert page["results"][0]["close"] == 100.0 and page["next"]
    csv = reader_client.get("/clm/bars/BTCUSDT/1h?format=csv&start=2024-01-01T04:00:00Z")
    assert csv.status_code == 200 and csv["Content-Type"].startswith("text/csv")
    assert csv.content.decode() == (
        "timestamp,open,high,low,close,volume\n"
        "2024-01-01T04:00:00Z,100,101,99,100,5\n"
        "2024-01-01T05:00:00Z,100,101,99,100,5\n"
    )
    assert reader_client.get("/clm/bars/BTCUSDT/1h", HTTP_ACCEPT="text/csv").status_code == 200
    assert reader_client.get("/clm/bars/BTCUSDT/2h").status_code == 404
    assert reader_client.get("/clm/bars/BTCUSDT/1h?start=yesterday").status_code == 400
    assert reader_client.get("/clm/bars/NOPE/1h").json()["count"] == 0


@pytest.mark.django_db
def test_bars_sent_through_the_api_feed_the_next_monitor_pass(feeder_client):
    version = production_model("FEED", [("quiet", 4_000)], train=(300, 3_990))
    before = drift_monitor_run(version=version)
    assert before.status == "insufficient_data" and "9 bars after" in before.detail
    # The feed sends the next 600 hourly bars, a volatile market, as a trading stack would.
    bars, _ = generate_bars(4_600, seed=2, regimes=[("quiet", 4_000), ("volatile", 600)])
    rows = [
        [str(t) + "Z", o, h, lo, c, v]
        for t, o, h, lo, c, v in zip(
            bars.timestamp[4_000:], bars.open[4_000:], bars.high[4_000:], bars.low[4_000:],
            bars.close[4_000:], bars.volume[4_000:], strict=True,
        )
    ]  # fmt: skip
    body = {"symbol": "FEED", "timeframe": "1h", "bars": rows}
    answer = feeder_client.post("/clm/bars", body, format="json")
    assert answer.status_code == 200 and answer.json()["new"] == 600
    after = drift_monitor_run(version=version)
    assert after.status == "ok" and after.n_current == 500
    assert after.current_end == pd.Timestamp(rows[-1][0]).to_pydatetime()
    assert after.drifted and after.trigger.outcome == "created"
