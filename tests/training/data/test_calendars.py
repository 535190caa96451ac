"""Calendars: periods per year by market, measured from bars, and the gaps each one allows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.data.calendars import (
    annualisation,
    calendar_periods_per_year,
    gap_calendar,
    max_gap_seconds,
    measured_periods_per_year,
)
from training.evaluation.backtest import PERIODS_PER_YEAR


def epoch(times: pd.DatetimeIndex) -> np.ndarray:
    return times.as_unit("s").asi8


@pytest.mark.parametrize(
    ("calendar", "timeframe", "expected"),
    [
        ("crypto", "1m", 525_600), ("crypto", "1h", 8_760), ("crypto", "4h", 2_190),
        ("crypto", "1d", 365), ("fx", "1h", 6_240), ("fx", "4h", 1_560), ("fx", "1d", 260),
        ("xnys", "1d", 252), ("xnys", "1h", 252 * 7), ("xnys", "15m", 252 * 26),
        ("xnys", "4h", 252 * 2), ("xlon", "1h", 252 * 9), ("xtks", "1h", 245 * 5),
    ],
)  # fmt: skip
def test_calendar_periods_per_year(calendar, timeframe, expected):
    assert calendar_periods_per_year(calendar, timeframe) == expected


def test_crypto_is_the_metrics_table():
    for timeframe, periods in PERIODS_PER_YEAR.items():
        assert calendar_periods_per_year("crypto", timeframe) == periods


def test_measured_from_the_bars():
    hourly = pd.date_range("2024-01-01", periods=24 * 60, freq="h")
    assert measured_periods_per_year(epoch(hourly)) == 8_760
    weekdays = hourly[hourly.day_of_week < 5]  # an FX-like week: 120 bars
    measured = measured_periods_per_year(epoch(weekdays))
    assert measured == round(
        (len(weekdays) - 1) * 365 * 86_400 / (epoch(weekdays)[-1] - epoch(weekdays)[0])
    )
    assert 6_100 < measured < 6_500  # 6,240 on the calendar; the window edges shift it
    assert measured_periods_per_year(epoch(hourly[: 24 * 20])) is None  # under four weeks


def test_annualisation_basis():
    hourly = epoch(pd.date_range("2024-01-01", periods=24 * 60, freq="h"))
    assert annualisation("fx", "1h", hourly).as_dict() == {
        "periods_per_year": 6_240, "calendar": "fx", "basis": "calendar",
    }  # fmt: skip
    assert annualisation("auto", "1h", hourly).as_dict() == {
        "periods_per_year": 8_760, "calendar": "auto", "basis": "measured",
    }  # fmt: skip
    assert annualisation("auto", "1h", hourly[:10]).basis == "default"


def test_gaps_each_calendar_allows():
    assert max_gap_seconds("crypto", "1h") == 3_600
    assert max_gap_seconds("fx", "1h") == 3_600 + 2 * 86_400 + 7_200
    assert max_gap_seconds("xnys", "1d") == 6 * 86_400
    week = 7 * 86_400
    assert gap_calendar("auto", "1h", 168 * 4 + 1, 4 * week) == "crypto"
    assert gap_calendar("auto", "1h", 120 * 4 + 1, 4 * week) == "fx"
    assert gap_calendar("auto", "1h", 35 * 4 + 1, 4 * week) == "xnys"
    assert gap_calendar("fx", "1h", 2, 1.0) == "fx"
    assert gap_calendar("auto", "1h", 35, week) == "crypto"  # too short to tell


@pytest.mark.django_db
def test_coverage_judges_gaps_by_the_symbols_calendar(admin_client):
    from training.data.bars import bars_import
    from training.data.ingest import read_bar_rows
    from training.models import Symbol

    hours = pd.date_range("2024-01-01", periods=24 * 33, freq="h", tz="UTC")  # 4 weeks and 5 days
    weekdays = hours[(hours.day_of_week < 5)].delete(30)  # weekends closed, one hour missing
    rows = [[t.isoformat(), 1.0, 1.1, 0.9, 1.0, 1.0] for t in weekdays]
    bars_import(frame=read_bar_rows(rows).frame, symbol="EURUSD", timeframe="1h")
    coverage = admin_client.get("/clm/bars").json()
    [auto] = coverage
    assert (auto["calendar"], auto["gaps"]) == ("auto (as fx)", 1)
    Symbol.objects.create(symbol="eurusd", calendar="crypto")
    [strict] = admin_client.get("/clm/bars").json()
    assert (strict["calendar"], strict["gaps"]) == ("crypto", 5)  # four weekends and the hour
    response = admin_client.post(
        "/admin/training/symbol/", {"form-TOTAL_FORMS": 1, "form-INITIAL_FORMS": 1,
        "form-0-id": Symbol.objects.get().pk, "form-0-calendar": "fx", "_save": "Save"},
    )  # fmt: skip
    assert response.status_code == 302
    assert Symbol.objects.get().calendar == "fx"
    [fx] = admin_client.get("/clm/bars").json()
    assert (fx["calendar"], fx["gaps"], fx["max_gap_seconds"]) == (
        "fx",
        1,
        3_600 + 2 * 86_400 + 7_200,
    )
