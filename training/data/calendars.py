"""Market calendars: how many bars a year a market has (to annualise) and which gaps are normal.

Pure: no ORM. A symbol's calendar is a `training.models.Symbol` row, edited in the admin; without
one (or with `auto`) the bars themselves say how many there are a year.

Built-in calendars (sessions per year x bars per session; a session's last bar may be partial):

    crypto   24/7           365 days x 24 h
    fx       24/5           260 days (52 weeks x 5) x 24 h; the weekend is not a gap
    xnys     NYSE / Nasdaq  252 sessions x 6.5 h (09:30-16:00 New York)
    xlon     London SE      252 sessions x 8.5 h (08:00-16:30 London)
    xetr     Xetra          252 sessions x 8.5 h (09:00-17:30 Frankfurt)
    xtks     Tokyo SE       245 sessions x 5 h (09:00-11:30, 12:30-15:00 Tokyo, lunch excluded)

So 1h bars are annualised with 8,760 periods on crypto, 6,240 on FX and 252 x 7 = 1,764 on the
NYSE (seven bars a session: 09:30, 10:30, ..., 15:30); daily bars with 365, 260 and 252.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np

# The pure module's table (ingest's is the same): the trainers, which a served artifact imports
# without Django, measure bars per year here.
from training.data.synthetic import TIMEFRAME_SECONDS

DAY = 86_400
YEAR_SECONDS = 365 * DAY  # the crypto year of METRICS.md: 8,760 hourly bars


@dataclass(frozen=True)
class CalendarSpec:
    label: str
    sessions_per_year: int
    session_seconds: int
    max_closed_seconds: int  # the longest stretch without trading that is normal (weekend...)


CALENDARS: dict[str, CalendarSpec] = {
    "crypto": CalendarSpec("crypto, 24/7", 365, DAY, 0),
    "fx": CalendarSpec("FX, 24/5", 260, DAY, 2 * DAY + 2 * 3600),
    "xnys": CalendarSpec("NYSE / Nasdaq sessions", 252, 6 * 3600 + 1800, 5 * DAY),
    "xlon": CalendarSpec("London Stock Exchange sessions", 252, 8 * 3600 + 1800, 5 * DAY),
    "xetr": CalendarSpec("Xetra sessions", 252, 8 * 3600 + 1800, 5 * DAY),
    "xtks": CalendarSpec("Tokyo Stock Exchange sessions", 245, 5 * 3600, 5 * DAY),
}
AUTO = "auto"
MIN_MEASURED_SPAN = 28 * DAY  # shorter histories say too little about weekends and holidays


@dataclass(frozen=True)
class Annualisation:
    """The P of METRICS.md for one series, and where it came from."""

    periods_per_year: int
    calendar: str  # a CALENDARS key, or "auto"
    basis: str  # "calendar", "measured" (auto: bars per year over the window) or "default"

    def as_dict(self) -> dict[str, object]:
        return {"periods_per_year": self.periods_per_year, "calendar": self.calendar,
                "basis": self.basis}  # fmt: skip


def calendar_periods_per_year(calendar: str, timeframe: str) -> int:
    """Bars a year of `timeframe` on a built-in calendar."""
    spec, step = CALENDARS[calendar], TIMEFRAME_SECONDS[timeframe]
    if step >= DAY:
        return spec.sessions_per_year * (step // DAY if spec.session_seconds == DAY else 1)
    return spec.sessions_per_year * math.ceil(spec.session_seconds / step)


def measured_periods_per_year(epoch_seconds: np.ndarray) -> int | None:
    """Bars a year as the bars show them: (N - 1) spacings over their span, in 365-day years.

    None when the bars span less than four weeks. Continuous hourly bars give exactly 8,760.
    """
    if len(epoch_seconds) < 2:
        return None
    return bars_per_year(len(epoch_seconds), int(epoch_seconds[-1]) - int(epoch_seconds[0]))


def bars_per_year(count: int, span_seconds: float) -> int | None:
    """(count - 1) spacings over `span_seconds`, in 365-day years; None under four weeks."""
    if count < 2 or span_seconds < MIN_MEASURED_SPAN:
        return None
    return max(1, round((count - 1) * YEAR_SECONDS / span_seconds))


def annualisation(calendar: str, timeframe: str, epoch_seconds: np.ndarray) -> Annualisation:
    """P for a series: its calendar's, or (auto) measured from the bars, or else the 24/7 one."""
    if calendar in CALENDARS:
        return Annualisation(calendar_periods_per_year(calendar, timeframe), calendar, "calendar")
    measured = measured_periods_per_year(epoch_seconds)
    if measured is not None:
        return Annualisation(measured, AUTO, "measured")
    return Annualisation(calendar_periods_per_year("crypto", timeframe), AUTO, "default")


def gap_calendar(calendar: str, timeframe: str, count: int, span_seconds: float) -> str:
    """The calendar whose gaps a series is judged by; `auto` picks the nearest built-in by how
    many bars a year the series has (about 5/7 of a 24/7 market is FX, less is sessions), or
    crypto (every missing bar a gap) for a series shorter than four weeks."""
    if calendar in CALENDARS:
        return calendar
    if count < 2 or span_seconds < MIN_MEASURED_SPAN:
        return "crypto"
    share = (count - 1) * TIMEFRAME_SECONDS[timeframe] / span_seconds
    return "crypto" if share > 0.9 else "fx" if share > 0.6 else "xnys"


def gap_allowed(calendar: str, timeframe: str, after: datetime, spacing_seconds: float) -> bool:
    """Is a spacing between two bars normal for the calendar? One bar always is; crypto allows
    nothing more; FX a weekend (a spacing that starts Friday to Sunday UTC, up to two days and two
    hours more, for daylight saving); exchanges anything up to their longest closure (their
    overnights, weekends and holidays: session hours are not checked bar by bar)."""
    step = TIMEFRAME_SECONDS[timeframe]
    if spacing_seconds <= step:
        return True
    if calendar == "fx":
        return after.weekday() >= 4 and spacing_seconds <= step + 2 * DAY + 2 * 3600
    return spacing_seconds <= max_gap_seconds(calendar, timeframe)


def max_gap_seconds(calendar: str, timeframe: str) -> int:
    """The longest spacing between two bars the calendar allows: one bar, plus its longest normal
    closure (an FX weekend; an exchange's overnight and long weekend)."""
    return TIMEFRAME_SECONDS[timeframe] + CALENDARS[calendar].max_closed_seconds
