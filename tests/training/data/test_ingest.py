"""The one bar parser: every file shape people have, written to disk here, read or refused."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.data.ingest import (
    BarImportError,
    parse_columns_option,
    read_bar_rows,
    read_bar_source,
)

# Three hourly bars, 2024-01-01 00:00..02:00 UTC, used in every shape below.
OPEN = [100.0, 100.5, 101.5]
HIGH = [101.0, 102.0, 101.5]
LOW = [99.0, 100.0, 100.8]
CLOSE = [100.5, 101.5, 101.0]
VOLUME = [10.0, 12.0, 8.0]
EPOCH = [1704067200, 1704070800, 1704074400]
UTC_TIMES = pd.to_datetime(EPOCH, unit="s", utc=True)


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def rows(fmt: str, times: list[str] | None = None, decimal: str = ".") -> str:
    """One line per bar: `fmt` formats (time, open, high, low, close, volume)."""
    times = times or ["2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z", "2024-01-01T02:00:00Z"]
    out = []
    for t, o, h, lo, c, v in zip(times, OPEN, HIGH, LOW, CLOSE, VOLUME, strict=True):
        cells = [str(x).replace(".", decimal) for x in (o, h, lo, c, v)]
        out.append(fmt.format(t, *cells))
    return "\n".join(out) + "\n"


def assert_bars(parsed, times=UTC_TIMES) -> None:
    frame = parsed.frame
    assert list(frame.columns) == ["timestamp", "open", "high", "low", "close", "volume"]
    assert list(frame["timestamp"]) == list(times)
    np.testing.assert_allclose(frame["open"], OPEN)
    np.testing.assert_allclose(frame["high"], HIGH)
    np.testing.assert_allclose(frame["low"], LOW)
    np.testing.assert_allclose(frame["close"], CLOSE)
    np.testing.assert_allclose(frame["volume"], VOLUME)


PLAIN = "{0},{1},{2},{3},{4},{5}"
SEMI = PLAIN.replace(",", ";")
TAB = PLAIN.replace(",", "\t")
HOURS = ["00:00", "01:00", "02:00"]
SPACED = [f"2024-01-01 {h}" for h in HOURS]
OFFSETS = [f"2024-01-01 {h}:00+00:00" for h in HOURS]
DAY_FIRST = [f"01.01.2024 {h}" for h in HOURS]
MS = [str(e * 1000) for e in EPOCH]
KLINE_TAIL = ",1704070799999,1005.0,42,5.1,512.7,0"


@pytest.mark.parametrize(
    ("name", "text", "expected_note"),
    [
        ("plain.csv", "timestamp,open,high,low,close,volume\n" + rows(PLAIN), "layout: header"),
        (
            "yahoo.csv",
            "Date,Open,High,Low,Close,Adj Close,Volume\n"
            + rows("{0},{1},{2},{3},{4},99.9,{5}", times=SPACED),
            "columns: timestamp='Date'",
        ),
        (
            "pandas_index.csv",
            ",Open,High,Low,Close,Volume\n" + rows(PLAIN, times=SPACED),
            "columns: timestamp=''",
        ),
        (
            "datetime.csv",
            "Datetime,Open,High,Low,Close,Volume,Dividends\n" + rows(PLAIN + ",0", times=OFFSETS),
            "ISO 8601 with offsets",
        ),
        (
            "split.csv",
            "Date,Time,Open,High,Low,Close,Volume\n" + rows("2024-01-01," + PLAIN, times=HOURS),
            "timestamp='Date'+'Time'",
        ),
        (
            "letters.csv",
            "time,o,h,l,c,v\n" + rows(PLAIN),
            "open='o'",
        ),
        (
            "binance.csv",
            rows(PLAIN + KLINE_TAIL, times=MS),
            "epoch milliseconds",
        ),
        (
            "binance_us.csv",
            rows(PLAIN + KLINE_TAIL, times=[str(e * 10**6) for e in EPOCH]),
            "epoch microseconds",
        ),
        (
            "mt4.csv",
            rows("2024.01.01," + PLAIN, times=HOURS),
            "MetaTrader 4",
        ),
        (
            "mt5.csv",
            "<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\t<VOL>\t<SPREAD>\n"
            + rows("2024.01.01\t" + TAB + "\t0\t12", times=[f"{h}:00" for h in HOURS]),
            "volume='<TICKVOL>'",
        ),
        (
            "semicolon.csv",
            "timestamp;open;high;low;close;volume\n" + rows(SEMI),
            "separator: semicolon",
        ),
        (  # German Excel: semicolons, decimal commas, day-first dates
            "decimal_comma.csv",
            "timestamp;open;high;low;close;volume\n" + rows(SEMI, times=DAY_FIRST, decimal=","),
            "decimal comma",
        ),
        (
            "epoch_s.csv",
            "time,open,high,low,close,volume\n" + rows(PLAIN, times=[str(e) for e in EPOCH]),
            "epoch seconds",
        ),
        (
            "epoch_ns.csv",
            "time,open,high,low,close,volume\n"
            + rows(PLAIN, times=[f"{e}000000000" for e in EPOCH]),
            "epoch nanoseconds",
        ),
        (
            "headerless.txt",
            rows(PLAIN),
            "layout: timestamp,open,high,low,close,volume",
        ),
        (
            "dukascopy.csv",
            "Gmt time,Open,High,Low,Close,Volume\n"
            + rows(PLAIN, times=[f"{t}:00.000" for t in DAY_FIRST]),
            "format %d.%m.%Y %H:%M:%S.%f",
        ),
        (
            "open_time.tsv",
            "open_time\topen\thigh\tlow\tclose\tvolume\tquote_volume\ttrades\n"
            + rows(TAB + "\t1.0\t3", times=MS),
            "separator: tab",
        ),
    ],
)
def test_file_shapes(tmp_path, name, text, expected_note):
    parsed = read_bar_source(write(tmp_path, name, text), timeframe="1h")
    assert_bars(parsed)
    assert any(expected_note in note for note in parsed.notes), parsed.notes


def test_encodings_and_gzip(tmp_path):
    text = "timestamp,open,high,low,close,volume\n" + rows(PLAIN)
    assert_bars(read_bar_source(write(tmp_path, "bom.csv", text, "utf-8-sig"), timeframe="1h"))
    old = "timestamp,open,high,low,close,volume,Börse\n" + rows(PLAIN + ",Xetra Frankfurt München")
    assert_bars(read_bar_source(write(tmp_path, "cp1252.csv", old, "cp1252"), timeframe="1h"))
    packed = tmp_path / "bars.csv.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    assert_bars(read_bar_source(packed, timeframe="1h"))
    with pytest.raises(BarImportError, match="UTF-16 text; save it as UTF-8"):
        read_bar_source(write(tmp_path, "u16.csv", text, "utf-16"))


def test_parquet_with_a_datetime_index_and_typed_columns(tmp_path):
    frame = pd.DataFrame(
        {"Open": OPEN, "High": HIGH, "Low": LOW, "Close": CLOSE, "Volume": VOLUME},
        index=pd.DatetimeIndex(UTC_TIMES.tz_convert(None), name="Date"),
    )
    frame.to_parquet(tmp_path / "bars.parquet")
    parsed = read_bar_source(tmp_path / "bars.parquet", timeframe="1h")
    assert_bars(parsed)
    assert "timestamps: naive, read as UTC (pass --tz to change)" in parsed.notes


def test_naive_timestamps_are_read_in_the_given_zone(tmp_path):
    text = "timestamp,open,high,low,close,volume\n" + rows(
        PLAIN, times=["2024-01-01 01:00", "2024-01-01 02:00", "2024-01-01 03:00"]
    )
    parsed = read_bar_source(write(tmp_path, "cet.csv", text), timeframe="1h", tz="Europe/Berlin")
    assert_bars(parsed)  # 01:00 in Berlin in winter is 00:00 UTC
    assert any("read in Europe/Berlin" in n for n in parsed.notes)
    with pytest.raises(BarImportError, match="not a time zone"):
        read_bar_source(write(tmp_path, "x.csv", text), tz="Mars/Olympus")


def test_offsets_are_converted_to_utc(tmp_path):
    text = "timestamp,open,high,low,close,volume\n" + rows(
        PLAIN,
        times=["2024-01-01T02:00:00+02:00", "2024-01-01T03:00:00+02:00", "2024-01-01T02:00:00Z"],
    )
    assert_bars(read_bar_source(write(tmp_path, "tz.csv", text), timeframe="1h"))


def test_newest_first_files_are_reversed(tmp_path):
    lines = rows(PLAIN).splitlines()
    text = "timestamp,open,high,low,close,volume\n" + "\n".join(reversed(lines)) + "\n"
    parsed = read_bar_source(write(tmp_path, "desc.csv", text), timeframe="1h")
    assert_bars(parsed)
    assert "rows were newest first: reversed" in parsed.notes


def test_columns_override_by_name_and_by_number(tmp_path):
    text = "When,First,Top,Bottom,Last,Qty\n" + rows(PLAIN)
    path = write(tmp_path, "odd.csv", text)
    with pytest.raises(BarImportError) as refused:
        read_bar_source(path)
    message = refused.value.message
    assert "columns found: 'When', 'First', 'Top', 'Bottom', 'Last', 'Qty'" in message
    assert "mapping tried: nothing" in message
    assert "missing: timestamp, open, high, low, close, volume" in message
    assert "--columns timestamp=<column name>" in message
    mapping = parse_columns_option(
        "timestamp=When,open=First,high=Top,low=Bottom,close=Last,volume=Qty"
    )
    assert_bars(read_bar_source(path, timeframe="1h", columns=mapping))
    headerless = write(tmp_path, "odd.txt", rows("x,{0},{5},{1},{2},{3},{4}"))
    numbers = parse_columns_option("timestamp=2,volume=3,open=4,high=5,low=6,close=7")
    assert_bars(read_bar_source(headerless, timeframe="1h", columns=numbers))
    with pytest.raises(BarImportError, match="unknown name 'price'"):
        parse_columns_option("price=Last")
    with pytest.raises(BarImportError, match="no such column"):
        read_bar_source(path, columns={"close": "Nope"})


def test_partial_mapping_names_what_was_tried_and_what_is_missing(tmp_path):
    path = write(tmp_path, "last.csv", "Date,Last,Volume\n2024-01-01,1,2\n")
    with pytest.raises(BarImportError) as refused:
        read_bar_source(path)
    message = refused.value.message
    assert message.startswith("last.csv: cannot tell which column is which")
    assert "mapping tried: timestamp='Date', volume='Volume'" in message
    assert "missing: open, high, low, close" in message


def test_unknown_headerless_layout_is_refused_with_its_first_row(tmp_path):
    with pytest.raises(BarImportError) as refused:
        read_bar_source(write(tmp_path, "three.csv", "1,2,3\n4,5,6\n"))
    assert "no header row and 3 columns" in refused.value.message
    assert "first row: '1', '2', '3'" in refused.value.message


def test_spacing_must_match_the_timeframe(tmp_path):
    path = write(tmp_path, "h.csv", "timestamp,open,high,low,close,volume\n" + rows(PLAIN))
    with pytest.raises(BarImportError) as refused:
        read_bar_source(path, timeframe="4h")
    assert "the bars are 1h apart (median spacing) but --timeframe is 4h" in refused.value.message
    assert "--timeframe 1h" in refused.value.message


def test_weekend_and_session_gaps_are_allowed(tmp_path):
    # Weekday daily bars: a weekend gap every five bars, median spacing still one day.
    days = pd.bdate_range("2024-01-01", periods=15)
    body = "".join(f"{d:%Y-%m-%d},10,11,9,10,1\n" for d in days)
    parsed = read_bar_source(
        write(tmp_path, "d.csv", "Date,Open,High,Low,Close,Volume\n" + body), timeframe="1d"
    )
    assert parsed.rows == 15
    assert "spacing: 1d (median), 2 gaps" in parsed.notes


def test_bad_rows_are_reported_by_line_number(tmp_path):
    text = (
        "timestamp,open,high,low,close,volume\n"
        + rows(PLAIN)
        + (
            "\n"  # a blank line still counts: line 5
            "not-a-date,1,2,0.5,1,1\n"  # line 6
            "2024-01-01T04:00:00Z,100,99,98,100.5,1\n"  # line 7: high below close
            "2024-01-01T05:00:00Z,100,98,99,98.5,1\n"  # line 8: high below low
            "2024-01-01T06:00:00Z,100,101,99,NaN,1\n"  # line 9
            "2024-01-01T07:00:00Z,0,101,99,100,1\n"  # line 10
            "2024-01-01T01:00:00Z,100.5,102,100,101.5,12\n"  # line 11: duplicate
            "2024-01-01T08:00:00Z,100,101,99,100,-5\n"  # line 12
        )
    )
    with pytest.raises(BarImportError) as refused:
        read_bar_source(write(tmp_path, "bad.csv", text), timeframe="1h")
    message = refused.value.message
    for expected in (
        "line 6: timestamp is not a date/time",
        "line 7: high is below open or close",
        "line 8: high is below low",
        "line 9: close is not a finite number",
        "line 10: prices must be positive",
        "line 11: duplicate timestamp",
        "line 12: volume is negative",
    ):
        assert expected in message
    assert refused.value.extra["bad_rows"] == 7


def test_rows_out_of_order_are_reported(tmp_path):
    lines = rows(PLAIN).splitlines()
    text = "timestamp,open,high,low,close,volume\n" + "\n".join([lines[1], lines[2], lines[0]])
    with pytest.raises(BarImportError, match="line 4: earlier than a row above it"):
        read_bar_source(write(tmp_path, "shuffled.csv", text))


def test_ambiguous_day_month_needs_a_date_format(tmp_path):
    text = "Date,Open,High,Low,Close,Volume\n" + rows(
        PLAIN, times=["01/02/2024", "01/03/2024", "01/04/2024"]
    )
    path = write(tmp_path, "us.csv", text)
    with pytest.raises(BarImportError, match="--date-format"):
        read_bar_source(path)
    parsed = read_bar_source(path, timeframe="1d", date_format="%m/%d/%Y")
    assert parsed.frame["timestamp"].iloc[0] == pd.Timestamp("2024-01-02", tz="UTC")


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("empty.csv", b"", "the file is empty"),
        ("blank.csv", b"\n\n  \n", "the file is empty"),
        ("header_only.csv", b"timestamp,open,high,low,close,volume\n", "a header but no rows"),
        ("binary.csv", bytes(range(256)) * 4, "not UTF-8 text"),
        ("png.csv", b"\x89PNG\r\n\x1a\n" + bytes(range(128, 256)) * 4, "not UTF-8 text"),
        (
            "ragged.csv",
            b"timestamp,open\n1,2\n3,4,5\n",
            "line 3 has 3 fields where the header has 2",
        ),
        ("cut.csv.gz", b"\x1f\x8b\x08\x00trunc", "cannot be read"),
        ("broken.parquet", b"PAR1 this is not really parquet", "not a readable Parquet file"),
        ("bars.json", b"{}", "unsupported file type '.json'"),
    ],
)
def test_unreadable_files_get_one_message(tmp_path, name, data, expected):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(BarImportError, match=expected):
        read_bar_source(path)


def test_json_rows_as_objects_and_as_lists():
    objects = [
        {"time": e * 1000, "o": o, "h": h, "l": lo, "c": c, "v": v, "trades": 3}
        for e, o, h, lo, c, v in zip(EPOCH, OPEN, HIGH, LOW, CLOSE, VOLUME, strict=True)
    ]
    assert_bars(read_bar_rows(objects, timeframe="1h"))
    lists = [
        [f"2024-01-01T0{i}:00:00Z", o, h, lo, c, v]
        for i, (o, h, lo, c, v) in enumerate(zip(OPEN, HIGH, LOW, CLOSE, VOLUME, strict=True))
    ]
    assert_bars(read_bar_rows(lists, timeframe="1h"))
    bad = [dict(objects[0]), dict(objects[1], h=1.0)]
    with pytest.raises(BarImportError, match="row 2: high is below low"):
        read_bar_rows(bad)
    with pytest.raises(BarImportError, match="bars is empty"):
        read_bar_rows([])
    with pytest.raises(BarImportError, match="all be objects or all be lists"):
        read_bar_rows([objects[0], [1, 2]])
