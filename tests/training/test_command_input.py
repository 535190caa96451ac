"""Bad input to the management commands: one clear message, a non-zero exit, nothing written.

`call_command` raising CommandError is what `manage.py` prints as one `CommandError: ...` line
with exit code 1; anything else it would print as a traceback. A few cases also run as a user
runs them, in a subprocess, to check exactly that.
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from evolution.models import EvolutionRun
from registry.models import TrainingJob
from tests.databases import database_url, empty_database_fixture  # noqa: F401
from training.models import Bar

from .conftest import store_bars

ROOT = Path(__file__).resolve().parents[2]
HEADER = "timestamp,open,high,low,close,volume\n"
ROW = "2024-01-01T{h:02d}:00:00Z,100,101,99,100.5,10\n"


def _rows(n: int) -> str:
    return "".join(ROW.format(h=h) for h in range(n))


def _parquet_bytes() -> bytes:
    frame = pd.read_csv(io.StringIO(HEADER + _rows(3)))
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# import_bars

IMPORT_CASES = {
    "empty.csv": (b"", "the file is empty"),
    "binary.csv": (b"\x89PNG\r\n\x1a\n" + bytes(range(128, 256)) * 4, "not UTF-8 text"),
    "utf16.csv": ((HEADER + _rows(2)).encode("utf-16"), "UTF-16 text; save it as UTF-8"),
    "ragged.csv": (
        (HEADER + _rows(1) + "2024-01-01T05:00:00Z,1,2,0.5,1.5,10,99,88\n").encode(),
        "line 3 has 8 fields where the header has 6",
    ),
    "header-only.csv": (HEADER.encode(), "has a header but no rows"),
    "garbage.parquet": (bytes(range(256)) * 4, "not a readable Parquet file"),
    "truncated.parquet": (_parquet_bytes()[:-40], "not a readable Parquet file"),
    "empty.parquet": (b"", "not a readable Parquet file"),
    "truncated.csv.gz": (gzip.compress((HEADER + _rows(20)).encode())[:30], "cannot be read"),
    "not-gzip.csv.gz": (b"timestamp,open\n", "cannot be read"),
}


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(IMPORT_CASES))
def test_import_bars_refuses_unreadable_files(tmp_path, name):
    content, message = IMPORT_CASES[name]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CommandError, match=message) as refused:
        call_command("import_bars", str(path), symbol="BTCUSDT", timeframe="1h")
    assert str(refused.value).startswith(f"{name}: nothing imported")
    assert not Bar.objects.exists()


@pytest.mark.django_db
def test_import_bars_extra_fields_on_the_first_row_import_nothing(tmp_path):
    """pandas reads a first row longer than the header shifted; the rows are refused."""
    path = tmp_path / "extra.csv"
    path.write_text(HEADER + "2024-01-01T00:00:00Z,1,2,0.5,1.5,10,99,88\n" + _rows(2))
    with pytest.raises(CommandError, match="nothing imported"):
        call_command("import_bars", str(path), symbol="BTCUSDT", timeframe="1h")
    assert not Bar.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("symbol", ["BTC/USDT", "", "x" * 40, "_BTC"])
def test_import_bars_refuses_symbols_the_api_would(tmp_path, symbol):
    path = tmp_path / "good.csv"
    path.write_text(HEADER + _rows(3))
    with pytest.raises(CommandError, match=r"--symbol .*: use 1-32 letters"):
        call_command("import_bars", str(path), symbol=symbol, timeframe="1h")
    assert not Bar.objects.exists()


# ---------------------------------------------------------------------------------------------
# generate_market_data


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start=9999-12-31"], "to beyond the year 9999; they must lie between 1970-01-01"),
        (["--start=2199-12-01", "--bars=1000"], "to 2200-01-11 15:00; they must lie between"),
        (["--start=1969-12-31"], "must lie between 1970-01-01 and 2200-01-01"),
        (["--timeframe=1d", "--bars=1000000"], "they must lie between"),
        (["--start=yesterday"], "--start 'yesterday': not an ISO 8601 date/time"),
        (["--start=2024-01-01T00:00:00+02:00"], "give the time in UTC"),
        (["--bars=10000000000000"], "--bars 10000000000000: must be between 2 and 1,000,000"),
        (["--bars=1"], "must be between 2 and 1,000,000"),
        (["--symbol=BTC/USDT"], "--symbol 'BTC/USDT': use 1-32 letters"),
    ],
)
def test_generate_market_data_refuses_before_writing(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("generate_market_data", "--symbol=AAA", *args, stdout=StringIO())
    assert not Bar.objects.exists()


@pytest.mark.django_db
def test_generate_market_data_writes_no_symbol_when_one_fails():
    """BBB's appended bars would pass 2200: AAA, generated before it, is not stored either."""
    store_bars("BBB", 100, seed=1, start="2199-12-01T00:00:00")
    with pytest.raises(CommandError, match="BBB: the bars would run from 2199-12-05 04:00"):
        call_command(
            "generate_market_data", "--symbol=AAA,BBB", "--append", bars=1000, stdout=StringIO()
        )
    assert set(Bar.objects.values_list("symbol", flat=True).distinct()) == {"BBB"}
    assert Bar.objects.count() == 100


@pytest.mark.django_db
def test_generate_market_data_accepts_utc_and_the_largest_run():
    call_command(
        "generate_market_data", "--symbol=AAA", "--start=2024-01-01T00:00:00Z", bars=100,
        stdout=StringIO(),
    )  # fmt: skip
    assert Bar.objects.filter(symbol="AAA").count() == 100
    assert Bar.objects.order_by("timestamp").first().timestamp.isoformat() == (
        "2024-01-01T00:00:00+00:00"
    )


# ---------------------------------------------------------------------------------------------
# train_model and evolve


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"param": ["bogus=1"]}, r"unknown xgboost params: \['bogus'\]"),
        ({"param": ["n_estimators=-3"]}, "xgboost param 'n_estimators' must be >= 1, got -3"),
        ({"param": ["max_depth=abc"]}, "xgboost param 'max_depth' must be int"),
        ({"param": ["max_depth=" + "[" * 5000]}, "xgboost param 'max_depth' must be int"),
        ({"param": ["calibration=\udcff"]}, "not UTF-8 text"),
        ({"param": ["no-equals-sign"]}, "use key=value"),
        ({"seed": -5}, "--seed -5: must be between 0 and 2147483647"),
        ({"seed": 10**14}, "--seed 100000000000000: must be between 0"),
        ({"symbol": "BTC/USDT"}, "--symbol 'BTC/USDT': use 1-32 letters"),
    ],
)
def test_train_model_refuses_bad_input_before_any_job(options, message):
    store_bars("BTCUSDT", 300, seed=3)
    with pytest.raises(CommandError, match=message):
        call_command(
            "train_model", **{"model_type": "xgboost", "symbol": "BTCUSDT", **options},
            stdout=StringIO(),
        )  # fmt: skip
    assert not TrainingJob.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"resume": "not-a-uuid"}, "--resume 'not-a-uuid': not a run id"),
        ({"resume": "00000000-0000-0000-0000-000000000000"}, "unknown evolution run"),
        ({"space": "[" * 5000 + "]" * 5000}, "--space nests too deeply"),
        ({"space": '{"n_jobs": {"a": {"b": [[[[[[[[1]]]]]]]]}}}'}, "nests deeper than 8 levels"),
        ({"space": '{"n_jobs": "\udcff"}'}, "--space .* not UTF-8 text"),
        ({"space": "{nope"}, "--space is not JSON"),
        ({"seed": 10**14}, "--seed 100000000000000: must be between 0"),
        ({"min_trades": -4}, "--min-trades -4: must be between 0"),
        ({"population": 10**6}, "population_size must be between 4 and 512"),
        ({"symbol": "BTC/USDT"}, "--symbol 'BTC/USDT': use 1-32 letters"),
    ],
)
def test_evolve_refuses_bad_input_before_any_run(options, message):
    with pytest.raises(CommandError, match=message):
        call_command("evolve", **{"symbol": "BTCUSDT", **options}, stdout=StringIO())
    assert not EvolutionRun.objects.exists()


# ---------------------------------------------------------------------------------------------
# setup_schedules


@pytest.mark.django_db
def test_setup_schedules_refuses_an_entry_left_invalid_and_changes_nothing():
    """Someone gave an entry an expiry time in the admin; the code sets expire_seconds."""
    call_command("setup_schedules", stdout=StringIO())
    entry = PeriodicTask.objects.order_by("name").first()
    PeriodicTask.objects.filter(pk=entry.pk).update(
        expires=timezone.now() + timedelta(days=1), expire_seconds=None, description="mine"
    )
    with pytest.raises(CommandError, match=r"no schedule written: .*expires"):
        call_command("setup_schedules", stdout=StringIO())
    entry.refresh_from_db()
    assert (entry.description, entry.expire_seconds) == ("mine", None)


# ---------------------------------------------------------------------------------------------
# As users run them: `manage.py ...` in a subprocess


def manage(*args: str, database: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "clm_project.settings.test",
        "DATABASE_URL": database_url(database),
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_manage_py_prints_one_line_and_exits_1(tmp_path):
    database = connection.settings_dict["NAME"]
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    runs = [
        manage("generate_market_data", "--symbol=AAA", "--start=9999-12-31", database=database),
        manage("import_bars", str(empty), "--symbol=AAA", "--timeframe=1h", database=database),
        manage("evolve", "--symbol=AAA", "--resume=nope", database=database),
    ]
    for run in runs:
        assert run.returncode == 1, run.stderr
        assert "Traceback" not in run.stderr
        assert [line for line in run.stderr.splitlines() if line.strip()][-1].startswith(
            "CommandError: "
        ), run.stderr
    assert not Bar.objects.exists()


def test_setup_schedules_on_an_unmigrated_database(empty_database):
    run = manage("setup_schedules", database=empty_database)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert run.stderr.strip().startswith("CommandError: no schedule written: the database refused")
    assert "has `manage.py migrate` run?" in run.stderr
    assert settings.DATABASES["default"]["NAME"] != empty_database
