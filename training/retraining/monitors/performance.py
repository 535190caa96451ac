"""Live performance of a production model: its positions backtested on the bars since training.

Pure numpy over training.evaluation.backtest, so the figures follow design/METRICS.md exactly. The
rolling Sharpe ratio is the METRICS.md Sharpe of the last `window` per-bar strategy returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from training.evaluation.backtest import backtest


@dataclass(frozen=True)
class LivePerformance:
    sharpe: float
    rolling_sharpe: float
    rolling_window: int
    max_drawdown: float
    total_return: float
    trades: int
    exposure: float
    n_bars: int


def rolling_sharpe(returns: ArrayLike, *, window: int, periods_per_year: float) -> float:
    """Annualized Sharpe of the last `window` of s[1..N-1] (s[0] is the entry cost only).

    Zero with fewer than two returns or no spread, as METRICS.md defines a flat strategy's.
    """
    tail = np.asarray(returns, dtype=np.float64)[1:][-window:]
    if len(tail) < 2:
        return 0.0
    std = tail.std(ddof=1)
    if std == 0 or not math.isfinite(std):
        return 0.0
    return float(tail.mean() / std * math.sqrt(periods_per_year))


def live_performance(
    close: ArrayLike, positions: ArrayLike, *, fee: float, periods_per_year: float, window: int
) -> LivePerformance:
    result = backtest(close, positions, fee=fee, periods_per_year=periods_per_year)
    rolling_n = min(window, result.n_bars - 1)
    return LivePerformance(
        sharpe=result.sharpe,
        rolling_sharpe=rolling_sharpe(
            result.returns, window=window, periods_per_year=periods_per_year
        ),
        rolling_window=max(rolling_n, 0),
        max_drawdown=result.max_drawdown,
        total_return=result.total_return,
        trades=result.trades,
        exposure=result.exposure,
        n_bars=result.n_bars,
    )
