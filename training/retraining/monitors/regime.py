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


def classify_regime(close: ArrayLike, params: RegimeParams | None = None) -> RegimeReading:
    """The regime at the last bar of `close` (oldest first) and whether it is confirmed."""
    params = params or RegimeParams()
    close = np.asarray(close, dtype=np.float64)
    if len(close) < params.min_bars:
        raise ValueError(f"need at least {params.min_bars} bars to classify, got {len(close)}")
    if not (np.isfinite(close).all() and (close > 0).all()):
        raise ValueError("close prices must be finite and positive")
    returns = pd.Series(np.diff(np.log(close)))
    vol = returns.rolling(params.vol_window).std().to_numpy()
    trend_rolling = returns.rolling(params.trend_window)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_stat = (
            trend_rolling.mean().to_numpy()
            / trend_rolling.std().to_numpy()
            * np.sqrt(params.trend_window)
        )
    t_stat = np.nan_to_num(t_stat, nan=0.0, posinf=0.0, neginf=0.0)

    states = []
    last = len(returns) - 1
    for t in range(last - params.confirm_bars + 1, last + 1):
        history = vol[max(0, t - params.history + 1) : t + 1]
        history = history[np.isfinite(history)]
        rank = float(np.mean(history <= vol[t])) if len(history) else 0.5
        states.append((_trend(t_stat[t], params), _volatility(rank, params), rank))
    trend, volatility, rank = states[-1]
    stable = all((s[0], s[1]) == (trend, volatility) for s in states)
    return RegimeReading(
        regime=regime_name(trend, volatility),
        trend=trend,
        volatility=volatility,
        stable=stable,
        trend_t=float(t_stat[last]),
        vol_rank=rank,
        realized_vol=float(vol[last]),
    )


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
