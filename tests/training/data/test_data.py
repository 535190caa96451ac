"""Market data: import (CSV, Parquet, bad rows), load into numpy, the generator command."""

from __future__ import annotations

from io import StringIO

import numpy as np
import pandas as pd
import pytest
from django.core.management import CommandError, call_command

from training.data.bars import fetch_training_data, load_bars
from training.data.selectors import bars_exist
from training.models import Bar

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


@pytest.mark.django_db
def test_parquet_import(tmp_path):
    frame = pd.read_csv(StringIO(GOOD_CSV))
    path = tmp_path / "bars.parquet"
    frame.to_parquet(path)
    call_command("import_bars", str(path), symbol="ETHUSDT", timeframe="4h", stdout=StringIO())
    assert len(load_bars("ETHUSDT", "4h")) == 3


@pytest.mark.django_db
def test_import_rejects_missing_columns_and_unknown_files(tmp_path):
    with pytest.raises(CommandError, match="missing columns volume"):
        call_command(
            "import_bars", str(write(tmp_path, "x.csv", "timestamp,open,high,low,close\n")),
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
