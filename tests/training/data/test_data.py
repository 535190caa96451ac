"""Market data: import (CSV, Parquet, bad rows), load into numpy, the generator command."""

from __future__ import annotations

from io import StringIO

import numpy as np
import pandas as pd
import pytest
from django.core.management import CommandError, call_command

from training.data.bars import bars_frame, bars_import, fetch_training_data, load_bars
from training.data.selectors import bars_exist
from training.data.synthetic import generate_bars
from training.models import Bar, BarRevision

GOOD_CSV = """timestamp,open,high,low,close,volume
2024-01-01T00:00:00Z,100,101,99,100.5,10
2024-01-01T01:00:00Z,100.5,102,100,101.5,12
2024-01-01T02:00:00Z,101.5,101.5,100.8,101,8
"""


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.django_db
def test_csv_import_and_load_round_trip(tmp_path):
    path = write(tmp_path, "bars.csv", GOOD_CSV)
    out = StringIO()
    call_command("import_bars", str(path), symbol="btcusdt", timeframe="1h", stdout=out)
    assert "imported 3 bars of BTCUSDT 1h (3 new, 0 replaced)" in out.getvalue()
    assert "timestamps: ISO 8601 with offsets, converted to UTC" in out.getvalue()
    bars = load_bars("BTCUSDT", "1h")
    np.testing.assert_allclose(bars.close, [100.5, 101.5, 101.0])
    assert bars.timestamp[0] == np.datetime64("2024-01-01T00:00:00")
    assert bars_exist(symbol="btcusdt", timeframe="1h")
    # Re-import is an upsert: nothing duplicated.
    call_command("import_bars", str(path), symbol="BTCUSDT", timeframe="1h", stdout=StringIO())
    assert Bar.objects.count() == 3


@pytest.mark.django_db
def test_bad_rows_are_reported_by_line_and_nothing_is_imported(tmp_path):
    text = GOOD_CSV + (
        "not-a-date,1,2,0.5,1,1\n"  # line 5
        "2024-01-01T04:00:00Z,100,99,98,100.5,1\n"  # line 6: high below close
        "2024-01-01T05:00:00Z,100,101,99,abc,1\n"  # line 7
        "2024-01-01T01:00:00Z,100.5,102,100,101.5,12\n"  # line 8: duplicate timestamp
        "2024-01-01T06:00:00Z,100,101,99,100,-5\n"  # line 9
    )
    path = write(tmp_path, "bad.csv", text)
    with pytest.raises(CommandError) as error:
        call_command("import_bars", str(path), symbol="BTCUSDT", timeframe="1h")
    message = str(error.value)
    assert "nothing imported" in message
    for expected in (
        "line 5: timestamp",
        "line 6: high is below",
        "line 7: close is not a finite number",
        "line 8: duplicate timestamp",
        "line 9: volume is negative",
    ):
        assert expected in message
    assert Bar.objects.count() == 0


YAHOO_DAILY = """Date,Open,High,Low,Close,Adj Close,Volume
2024-01-02,187.15,188.44,183.89,185.64,184.94,82488700
2024-01-03,184.22,185.88,183.43,184.25,183.55,58414500
2024-01-04,182.15,183.09,180.88,181.91,181.22,71983600
2024-01-05,181.99,182.76,180.17,181.18,180.49,62303300
2024-01-08,182.09,185.60,181.50,185.56,184.85,59144500
"""


@pytest.mark.django_db
def test_import_a_yahoo_export_in_its_exchange_time_zone(tmp_path):
    path = write(tmp_path, "AAPL.csv", YAHOO_DAILY)
    out = StringIO()
    call_command(
        "import_bars", str(path), symbol="AAPL", timeframe="1d", tz="America/New_York", stdout=out
    )
    text = out.getvalue()
    assert "imported 5 bars of AAPL 1d (5 new, 0 replaced)" in text
    assert "naive, read in America/New_York, converted to UTC" in text
    assert "columns: timestamp='Date', open='Open'" in text
    bars = load_bars("AAPL", "1d")
    assert bars.timestamp[0] == np.datetime64("2024-01-02T05:00:00")  # midnight in New York
    np.testing.assert_allclose(bars.close, [185.64, 184.25, 181.91, 181.18, 185.56])


@pytest.mark.django_db
def test_naive_timestamps_are_said_to_be_utc(tmp_path):
    path = write(tmp_path, "naive.csv", GOOD_CSV.replace("Z", ""))
    out = StringIO()
    call_command("import_bars", str(path), symbol="X", timeframe="1h", stdout=out)
    assert "naive, read as UTC (pass --tz to change)" in out.getvalue()


@pytest.mark.django_db
def test_import_binance_klines_and_a_columns_override(tmp_path):
    klines = "".join(
        f"{1704067200000 + i * 3_600_000},100,101,99,100.5,10,{1704070799999 + i * 3_600_000},"
        "1005,42,5,500,0\n"
        for i in range(4)
    )
    out = StringIO()
    call_command(
        "import_bars", str(write(tmp_path, "k.csv", klines)), symbol="BTCUSDT", timeframe="1h",
        stdout=out,
    )  # fmt: skip
    assert "Binance klines" in out.getvalue() and "epoch milliseconds" in out.getvalue()
    assert len(load_bars("BTCUSDT", "1h")) == 4
    odd = write(tmp_path, "odd.csv", "When,Last,Qty\n2024-01-01,10,1\n2024-01-02,11,1\n")
    with pytest.raises(CommandError) as refused:
        call_command("import_bars", str(odd), symbol="ODD", timeframe="1d")
    message = str(refused.value)
    assert "columns found: 'When', 'Last', 'Qty'" in message
    assert "missing: timestamp, open, high, low, close, volume" in message
    assert "--columns" in message
    call_command(
        "import_bars", str(odd), symbol="ODD", timeframe="1d", stdout=StringIO(),
        columns="timestamp=When,open=Last,high=Last,low=Last,close=Last,volume=Qty",
    )  # fmt: skip
    np.testing.assert_allclose(load_bars("ODD", "1d").close, [10, 11])


@pytest.mark.django_db
def test_import_refuses_a_timeframe_the_spacing_contradicts(tmp_path):
    path = write(tmp_path, "bars.csv", GOOD_CSV)
    with pytest.raises(CommandError, match=r"1h apart .* but --timeframe is 4h"):
        call_command("import_bars", str(path), symbol="BTCUSDT", timeframe="4h")
    assert Bar.objects.count() == 0


@pytest.mark.django_db
def test_parquet_import(tmp_path):
    frame = pd.read_csv(StringIO(GOOD_CSV))
    path = tmp_path / "bars.parquet"
    frame.to_parquet(path)
    call_command("import_bars", str(path), symbol="ETHUSDT", timeframe="1h", stdout=StringIO())
    assert len(load_bars("ETHUSDT", "1h")) == 3


@pytest.mark.django_db
def test_import_rejects_missing_columns_and_unknown_files(tmp_path):
    with pytest.raises(CommandError, match="missing: volume"):
        call_command(
            "import_bars", str(write(tmp_path, "x.csv", "timestamp,open,high,low,close\n1,2,3,1,")),
            symbol="X", timeframe="1h",
        )  # fmt: skip
    with pytest.raises(CommandError, match="no such file"):
        call_command("import_bars", str(tmp_path / "nope.csv"), symbol="X", timeframe="1h")
    with pytest.raises(CommandError, match="unsupported file type"):
        call_command(
            "import_bars", str(write(tmp_path, "x.json", "{}")), symbol="X", timeframe="1h"
        )


@pytest.mark.django_db
def test_generator_is_deterministic_and_appends(tmp_path):
    call_command(
        "generate_market_data", "--symbol=AAA,BBB", bars=600, seed=4, timeframe="1h",
        stdout=StringIO(),
    )  # fmt: skip
    a1 = load_bars("AAA", "1h")
    b1 = load_bars("BBB", "1h")
    assert len(a1) == len(b1) == 600
    assert not np.allclose(a1.close, b1.close)  # one stream per symbol
    call_command("generate_market_data", "--symbol=AAA", bars=600, seed=4, stdout=StringIO())
    np.testing.assert_array_equal(load_bars("AAA", "1h").close, a1.close)
    call_command(
        "generate_market_data", "--symbol=AAA", bars=100, seed=4, append=True,
        regimes="volatile:100", stdout=StringIO(),
    )  # fmt: skip
    grown = load_bars("AAA", "1h")
    assert len(grown) == 700
    assert (np.diff(grown.timestamp.astype("int64")) == 3600).all()
    window = fetch_training_data("AAA", "1h", (None, grown.timestamp[600].item()))
    assert len(window) == 600


@pytest.mark.django_db
def test_generator_rejects_bad_flags():
    with pytest.raises(CommandError, match="unknown regime"):
        call_command("generate_market_data", "--symbol=A", bars=10, regimes="sideways:10")
    with pytest.raises(CommandError, match="covers 5 bars"):
        call_command("generate_market_data", "--symbol=A", bars=10, regimes="quiet:5")


@pytest.mark.django_db
def test_a_worker_reads_a_series_again_only_when_its_stored_bars_changed():
    """Whoever writes (an import, an ORM delete or update), the series' revision changes, so
    the bars a worker holds are never served once the stored ones differ."""
    bars, _ = generate_bars(300, seed=2)
    bars_import(frame=bars_frame(bars), symbol="KEEP", timeframe="1h")
    bars_import(frame=bars_frame(bars), symbol="OTHER", timeframe="1h")
    held = fetch_training_data("KEEP", "1h")
    assert fetch_training_data("keep", "1h") is held  # unchanged: the same arrays
    assert not held.close.flags.writeable  # shared with the next job: read-only
    other = BarRevision.objects.get(symbol="OTHER", timeframe="1h").revision

    def changed(change) -> None:
        before = fetch_training_data("KEEP", "1h")
        change()
        after = fetch_training_data("KEEP", "1h")
        assert after is not before
        np.testing.assert_array_equal(after.close, load_bars("KEEP", "1h").close)

    frame = bars_frame(bars)
    frame.loc[10, "close"] = frame.loc[10, "high"]
    changed(lambda: bars_import(frame=frame, symbol="KEEP", timeframe="1h"))  # one value
    changed(lambda: Bar.objects.filter(symbol="KEEP").order_by("timestamp")[:1].get().delete())
    changed(lambda: Bar.objects.filter(symbol="KEEP", close__gt=0).update(volume=1.0))
    changed(lambda: bars_import(frame=bars_frame(bars), symbol="KEEP", timeframe="1h"))
    # A replayed batch changes nothing stored, so nothing is read again; other series keep theirs.
    held = fetch_training_data("KEEP", "1h")
    bars_import(frame=bars_frame(bars), symbol="KEEP", timeframe="1h")
    assert fetch_training_data("KEEP", "1h") is held
    assert BarRevision.objects.get(symbol="OTHER", timeframe="1h").revision == other
    # A window is held apart from the whole series.
    window = fetch_training_data("KEEP", "1h", (None, held.timestamp[100].item()))
    assert len(window) == 100 and fetch_training_data("KEEP", "1h") is held
