"""A market-regime classifier from recent bars: a trend state and a volatility state.

Pure numpy/pandas. For each bar t:
- volatility: the standard deviation of the last `vol_window` one-bar log returns, ranked against
  its own values over the last `history` bars. Below the `low_quantile` rank it is "low_vol", above
  the `high_quantile` rank "high_vol", else "normal_vol". Ranking against the series' own history
  makes the same thresholds work for any symbol and timeframe.
- trend: the t-statistic of the mean log return over the last `trend_window` bars,
  mean / std * sqrt(window). Above `trend_t` it is "uptrend", below -`trend_t` "downtrend", else
  "range".
The regime is "<trend>:<volatility>", e.g. "uptrend:high_vol". It is `stable` when the last
`confirm_bars` bars all have the same regime: the monitor only reports a change to a stable regime,
so a series that hovers at a threshold does not flap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

TRENDS = ("uptrend", "downtrend", "range")
VOLATILITIES = ("low_vol", "normal_vol", "high_vol")


@dataclass(frozen=True)
class RegimeParams:
    vol_window: int = 48
    trend_window: int = 96
    history: int = 1_000
    low_quantile: float = 0.25
    high_quantile: float = 0.75
    trend_t: float = 2.0
    confirm_bars: int = 6

    @property
    def min_bars(self) -> int:
        """Bars needed: the longest window, plus enough volatility history to rank against."""
        return max(self.vol_window, self.trend_window) + max(self.confirm_bars, 100) + 1


@dataclass(frozen=True)
class RegimeReading:
    regime: str
    trend: str
    volatility: str
    stable: bool
    trend_t: float
    vol_rank: float
    realized_vol: float

    def metrics(self) -> dict[str, float]:
        return {
            "trend_t": self.trend_t,
            "vol_rank": self.vol_rank,
            "realized_vol": self.realized_vol,
        }


def regime_name(trend: str, volatility: str) -> str:
    return f"{trend}:{volatility}"


UNCLASSIFIED = "unclassified"
REGIMES: tuple[str, ...] = tuple(regime_name(t, v) for t in TRENDS for v in VOLATILITIES)


@dataclass(frozen=True)
class _States:
    """Per-bar inputs of the classifier; index b is bar b of the close series (b = 0 has none)."""

    t_stat: np.ndarray
    vol_rank: np.ndarray
    realized_vol: np.ndarray


def _states(close: np.ndarray, params: RegimeParams, *, since: int = 0) -> _States:
    """The classifier's inputs for every bar; the volatility rank only from bar `since` on (NaN
    before it), which is all a caller of the later bars needs: a rank looks `history` values back,
    so it is ranked over those values alone, exactly as over the whole series."""
    if not (np.isfinite(close).all() and (close > 0).all()):
        raise ValueError("close prices must be finite and positive")
    returns = pd.Series(np.diff(np.log(close)))
    vol = returns.rolling(params.vol_window).std()
    trend_rolling = returns.rolling(params.trend_window)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_stat = (
            trend_rolling.mean().to_numpy()
            / trend_rolling.std().to_numpy()
            * np.sqrt(params.trend_window)
        )
    t_stat = np.nan_to_num(t_stat, nan=0.0, posinf=0.0, neginf=0.0)
    # Share of the last `history` finite volatilities at or below this one ("max" ranks ties up).
    # returns[i] is the move into bar i + 1: bar `since` needs the ranks from returns[since - 1].
    first = max(since - 1, 0)
    ranked_from = max(first - params.history + 1, 0)
    rank = np.full(len(vol), np.nan)
    rank[first:] = (
        vol.iloc[ranked_from:]
        .rolling(params.history, min_periods=1)
        .rank(method="max", pct=True)
        .to_numpy()[first - ranked_from :]
    )
    rank[first:] = np.nan_to_num(rank[first:], nan=0.5)
    # Shift by one bar: returns[i] is the move into bar i + 1.
    return _States(
        t_stat=np.concatenate([[0.0], t_stat]),
        vol_rank=np.concatenate([[0.5], rank]),
        realized_vol=np.concatenate([[np.nan], vol.to_numpy()]),
    )


def classify_regime(close: ArrayLike, params: RegimeParams | None = None) -> RegimeReading:
    """The regime at the last bar of `close` (oldest first) and whether it is confirmed."""
    params = params or RegimeParams()
    close = np.asarray(close, dtype=np.float64)
    if len(close) < params.min_bars:
        raise ValueError(f"need at least {params.min_bars} bars to classify, got {len(close)}")
    states = _states(close, params)
    recent = [
        (_trend(states.t_stat[b], params), _volatility(states.vol_rank[b], params))
        for b in range(len(close) - params.confirm_bars, len(close))
    ]
    trend, volatility = recent[-1]
    return RegimeReading(
        regime=regime_name(trend, volatility),
        trend=trend,
        volatility=volatility,
        stable=all(state == (trend, volatility) for state in recent),
        trend_t=float(states.t_stat[-1]),
        vol_rank=float(states.vol_rank[-1]),
        realized_vol=float(states.realized_vol[-1]),
    )


def regime_labels(
    close: ArrayLike, params: RegimeParams | None = None, *, since: int = 0
) -> np.ndarray:
    """The regime of every bar of `close` from bar `since` on, each from the bars up to it only
    (causal): `len(close) - since` labels.

    Bar b gets what `classify_regime(close[: b + 1])` reports as its regime (without the
    confirmation, which is the monitor's concern); bars with less history than `min_bars` are
    UNCLASSIFIED. One pass over the series: the rolling windows only look back, so the labels of
    the later bars alone cost less and are the same as those of the whole series.
    """
    params = params or RegimeParams()
    close = np.asarray(close, dtype=np.float64)
    since = min(max(since, 0), len(close))
    labels = np.full(len(close) - since, UNCLASSIFIED, dtype=object)
    if len(close) < params.min_bars:
        return labels
    states = _states(close, params, since=since)
    t_stat, vol_rank = states.t_stat[since:], states.vol_rank[since:]
    trend = np.where(
        t_stat > params.trend_t, "uptrend", np.where(t_stat < -params.trend_t, "downtrend", "range")
    )
    volatility = np.where(
        vol_rank < params.low_quantile,
        "low_vol",
        np.where(vol_rank > params.high_quantile, "high_vol", "normal_vol"),
    )
    classified = slice(max(params.min_bars - 1 - since, 0), None)
    labels[classified] = np.char.add(np.char.add(trend[classified], ":"), volatility[classified])
    return labels


def _trend(t_stat: float, params: RegimeParams) -> str:
    if t_stat > params.trend_t:
        return "uptrend"
    if t_stat < -params.trend_t:
        return "downtrend"
    return "range"


def _volatility(rank: float, params: RegimeParams) -> str:
    if rank < params.low_quantile:
        return "low_vol"
    if rank > params.high_quantile:
        return "high_vol"
    return "normal_vol"
