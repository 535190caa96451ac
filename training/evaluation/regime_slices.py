"""An evaluation sliced by market regime: the backtest's figures per regime (pure numpy).

A model can pass the gates on a whole window and still lose money whenever the market is volatile;
slicing shows it. Each bar's regime comes from the regime monitor's classifier applied to the bars
up to that bar (regime_labels of training.retraining.monitors.regime), so it is what a trader
could have known at the bar's close. docs/evaluation.md defines the slices; in short:

- The unit is a decision bar t: the position w[t] taken at its close, what it cost,
  fee * |w[t] - w[t-1]| (w[-1] = 0), and what it earned over the next bar, w[t] * a[t+1] with
  a[t+1] = close[t+1] / close[t] - 1. It belongs to the regime of bar t. The last bar of the window
  decides nothing that is held inside the window, so a window of N bars has N - 1 decision bars.
- Per regime: `bars` (decision bars), `sharpe` (mean over standard deviation, ddof=1, of their
  returns, times sqrt(periods per year); 0 with fewer than 2 bars or constant returns),
  `total_return` (their returns compounded), `max_drawdown` (of that compounded equity, starting
  at 1), `trades` (trades opened on a bar of the regime: a run of same-sign non-zero positions,
  as in the backtest) and `share` (of the window's decision bars).
- Every regime of the classifier is listed; one without a bar in the window is reported as
  `{"bars": 0, "absent": true}` with no figures, never silently left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from training.retraining.monitors.regime import REGIMES, UNCLASSIFIED, regime_labels


@dataclass(frozen=True)
class RegimeEvaluation:
    """Each window bar's regime label and the figures per regime."""

    labels: np.ndarray
    slices: dict[str, dict[str, Any]]


def evaluate_by_regime(
    *,
    close: ArrayLike,
    window: slice,
    positions: ArrayLike,
    fee: float,
    periods_per_year: float,
    labels: np.ndarray | None = None,
) -> RegimeEvaluation:
    """Slices of an evaluation `window` of the bars `close` (all of them, oldest first).

    The labels come from the bars up to the window's end only; each one from the bars up to its
    own bar, so the bars before the window give the first ones their history. A caller that
    already has them for these bars and this window (`window_regime_labels`) passes `labels`.
    """
    close_arr = np.asarray(close, dtype=np.float64)
    if labels is None:
        labels = window_regime_labels(close_arr, window)
    slices = regime_slices(
        close=close_arr[window],
        positions=positions,
        regimes=labels,
        fee=fee,
        periods_per_year=periods_per_year,
    )
    return RegimeEvaluation(labels=labels, slices=slices)


def window_regime_labels(close: ArrayLike, window: slice) -> np.ndarray:
    """The regime label of each bar of `window`, from the bars `close` up to that bar."""
    close_arr = np.asarray(close, dtype=np.float64)
    return regime_labels(close_arr[: window.stop], since=window.start or 0)


def regime_slices(
    *,
    close: ArrayLike,
    positions: ArrayLike,
    regimes: Sequence[str] | np.ndarray,
    fee: float,
    periods_per_year: float,
) -> dict[str, dict[str, Any]]:
    """Figures per regime for the window's `close`, `positions` and per-bar `regimes` labels.

    Keys are every regime in the classifier's order, then UNCLASSIFIED if some bar had too little
    history to be classified. Values are JSON-safe.
    """
    close_arr = np.asarray(close, dtype=np.float64)
    w = np.asarray(positions, dtype=np.float64)
    labels = np.asarray(regimes, dtype=object)
    if not len(close_arr) == len(w) == len(labels):
        raise ValueError(
            f"close, positions and regimes differ in length: {len(close_arr)}, {len(w)}, "
            f"{len(labels)}"
        )
    if len(close_arr) < 2:
        raise ValueError(f"regime slices need at least 2 bars, got {len(close_arr)}")
    previous = np.concatenate([[0.0], w[:-1]])
    decision = w[:-1] * (close_arr[1:] / close_arr[:-1] - 1.0) - fee * np.abs(w - previous)[:-1]
    sign = np.sign(w)
    opens = (sign != 0) & (sign != np.sign(previous))
    labels, opens = labels[:-1], opens[:-1]

    names = list(REGIMES)
    if (labels == UNCLASSIFIED).any():
        names.append(UNCLASSIFIED)
    unknown = set(labels) - set(names)
    if unknown:
        raise ValueError(f"unknown regimes {sorted(unknown)}; known: {names}")
    slices: dict[str, dict[str, Any]] = {}
    for name in names:
        mine = labels == name
        if not mine.any():
            slices[name] = {"bars": 0, "absent": True}
            continue
        slices[name] = _figures(decision[mine], int(opens[mine].sum()), periods_per_year)
        slices[name]["share"] = float(mine.mean())
    return slices


def _figures(returns: np.ndarray, trades: int, periods_per_year: float) -> dict[str, Any]:
    equity = np.cumprod(1.0 + returns)
    peaks = np.maximum.accumulate(np.concatenate([[1.0], equity]))[1:]
    std = float(returns.std(ddof=1)) if len(returns) > 1 else 0.0
    sharpe = float(returns.mean()) / std * math.sqrt(periods_per_year) if std > 0 else 0.0
    return {
        "bars": len(returns),
        "absent": False,
        "sharpe": sharpe,
        "total_return": float(equity[-1] - 1.0),
        "max_drawdown": float(np.max(1.0 - equity / peaks)),
        "trades": trades,
    }


def worst_regime_loss(
    slices: dict[str, dict[str, Any]], *, min_bars: int
) -> tuple[str, float] | None:
    """The regime (with at least `min_bars` decision bars) whose total return is lowest, and that
    return; None when no classified regime has that many bars."""
    candidates = [
        (name, figures["total_return"])
        for name, figures in slices.items()
        if name != UNCLASSIFIED and not figures.get("absent") and figures["bars"] >= min_bars
    ]
    return min(candidates, key=lambda item: item[1]) if candidates else None
