"""Reads of market data: existence (training-request validation), ranges, coverage and gaps."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Max, Min, QuerySet, Window
from django.db.models.functions import Lag

from training.data.bars import COLUMNS, load_bars
from training.data.calendars import (
    CALENDARS,
    Annualisation,
    annualisation,
    bars_per_year,
    gap_allowed,
    gap_calendar,
    max_gap_seconds,
)
from training.data.ingest import TIMEFRAME_SECONDS
from training.models import Bar, Calendar, Symbol


def bars_required() -> bool:
    """With the default loader a job can only train on bars in this database; another loader
    (settings.CLM_DATA_LOADER) answers for its own data."""
    return settings.CLM_DATA_LOADER == "training.data.fetch_training_data"


def bars_exist(*, symbol: str, timeframe: str) -> bool:
    return Bar.objects.filter(symbol=symbol.upper(), timeframe=timeframe).exists()


def data_available(*, symbol: str, timeframe: str) -> bool:
    """settings.CLM_DATA_AVAILABLE: may a job train on this market? Only bars in this database
    count with the default loader; another loader answers for its own data at run time."""
    return not bars_required() or bars_exist(symbol=symbol, timeframe=timeframe)


def bars_range(
    *, symbol: str, timeframe: str, start: datetime | None = None, end: datetime | None = None
) -> QuerySet:
    """One series' bars in [start, end), oldest first, as dicts (for the API's pages)."""
    bars = Bar.objects.filter(symbol=symbol.upper(), timeframe=timeframe)
    if start is not None:
        bars = bars.filter(timestamp__gte=start)
    if end is not None:
        bars = bars.filter(timestamp__lt=end)
    return bars.order_by("timestamp").values(*COLUMNS)


def bars_csv(
    *, symbol: str, timeframe: str, start: datetime | None = None, end: datetime | None = None
) -> str:
    """One series' bars in [start, end) as CSV with a header (timestamps ISO 8601, UTC)."""
    bars = load_bars(symbol, timeframe, start, end)
    frame = pd.DataFrame({c: getattr(bars, c) for c in COLUMNS})
    frame["timestamp"] = pd.to_datetime(bars.timestamp).strftime("%Y-%m-%dT%H:%M:%SZ")
    return frame.to_csv(index=False, float_format="%.10g", lineterminator="\n")


def bars_coverage(*, longest: int = 10) -> list[dict[str, Any]]:
    """Every stored series: count, first and last bar, and the gaps its calendar does not allow
    (the `longest` of them listed)."""
    series = (
        Bar.objects.values("symbol", "timeframe")
        .annotate(count=Count("id"), first=Min("timestamp"), last=Max("timestamp"))
        .order_by("symbol", "timeframe")
    )
    out = []
    for row in series:
        label, judged = bar_gap_rule(**row)
        timeframe = row["timeframe"]
        gaps = [
            g
            for g in _spacings_over(row["symbol"], timeframe, TIMEFRAME_SECONDS[timeframe])
            if not gap_allowed(judged, timeframe, g["prev"], g["step"].total_seconds())
        ]
        gaps.sort(key=lambda g: (-g["step"], g["timestamp"]))
        out.append(
            {
                **row,
                "calendar": label,
                "max_gap_seconds": max_gap_seconds(judged, timeframe),
                "gaps": len(gaps),
                "longest_gaps": [
                    {
                        "after": g["prev"],
                        "before": g["timestamp"],
                        "spacing_seconds": int(g["step"].total_seconds()),
                    }
                    for g in gaps[:longest]
                ],
            }
        )
    return out


def symbol_calendar(*, symbol: str) -> str:
    """The calendar set for a symbol in the admin, `auto` without one."""
    row = Symbol.objects.filter(symbol=symbol.strip().upper()).values_list("calendar", flat=True)
    return row.first() or Calendar.AUTO


def series_annualisation(*, symbol: str, timeframe: str, timestamps: np.ndarray) -> Annualisation:
    """The periods per year that annualise a series' metrics: its calendar's, or (auto) bars per
    year measured over `timestamps` (the bars a job trains and evaluates on)."""
    epoch = np.asarray(timestamps).astype("datetime64[s]").astype(np.int64)
    return annualisation(symbol_calendar(symbol=symbol), timeframe, epoch)


# The stored history that `stored_periods_per_year` measures over (the newest bars).
MEASURED_HISTORY = timedelta(days=365)


def stored_periods_per_year(*, symbol: str, timeframe: str) -> int:
    """P for a model line's live figures (shadow, experiments, rollback, monitors): its symbol's
    calendar, or (auto) bars per year over the newest year of stored bars, as
    `series_annualisation` measures a job's bars: live Sharpe ratios and the evaluations they
    are compared with are annualised alike."""
    symbol = symbol.strip().upper()
    calendar = symbol_calendar(symbol=symbol)
    fallback = annualisation(calendar, timeframe, np.empty(0)).periods_per_year
    if calendar in CALENDARS:
        return fallback
    bars = Bar.objects.filter(symbol=symbol, timeframe=timeframe)
    newest = bars.aggregate(last=Max("timestamp"))["last"]
    if newest is None:
        return fallback
    span = bars.filter(timestamp__gte=newest - MEASURED_HISTORY).aggregate(
        n=Count("timestamp"), first=Min("timestamp")
    )
    measured = bars_per_year(span["n"], (newest - span["first"]).total_seconds())
    return fallback if measured is None else measured


def bar_gap_rule(
    *, symbol: str, timeframe: str, count: int, first: datetime, last: datetime
) -> tuple[str, str]:
    """The calendar a series' gaps are judged by, as shown and as a calendar name."""
    chosen = symbol_calendar(symbol=symbol)
    judged = gap_calendar(chosen, timeframe, count, (last - first).total_seconds())
    return (judged if chosen == judged else f"auto (as {judged})"), judged


def _spacings_over(symbol: str, timeframe: str, seconds: int) -> list[dict[str, Any]]:
    """Consecutive bars further apart than `seconds` (LAG in the database, not in Python)."""
    return list(
        Bar.objects.filter(symbol=symbol, timeframe=timeframe)
        .annotate(prev=Window(Lag("timestamp"), order_by=F("timestamp").asc()))
        .annotate(step=ExpressionWrapper(F("timestamp") - F("prev"), output_field=DurationField()))
        .filter(step__gt=timedelta(seconds=seconds))
        .values("prev", "timestamp", "step")
    )


@dataclass(frozen=True)
class Market:
    """A symbol and timeframe with stored bars: how many, from when to when."""

    symbol: str
    timeframe: str
    bars: int
    first: datetime
    last: datetime


def markets_list() -> list[Market]:
    rows = (
        Bar.objects.values("symbol", "timeframe")
        .annotate(bars=Count("id"), first=Min("timestamp"), last=Max("timestamp"))
        .order_by("symbol", "timeframe")
    )
    return [Market(**row) for row in rows]
