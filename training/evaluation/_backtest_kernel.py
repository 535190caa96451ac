"""The backtest's loops over bars, compiled with numba (imported on the first backtest only).

Two passes over the series: the first computes the bar returns, the running equity and its
drawdown, the trades and what the moments need (sum, range); the second the central moments and
the squared losses. Each reads its arrays once and only the bar returns are stored, so a million
bars take a few milliseconds. `training.evaluation.backtest` turns what they return into the
metrics.

Sums are added in blocks of `_BLOCK` bars (each block in order, then the block totals), which keeps
their rounding error near that of numpy's pairwise sums instead of growing with the series.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

_BLOCK = 1024


def _compile(function: Callable[..., Any]) -> Callable[..., Any]:
    """njit with numpy's float semantics (x / 0 is inf or NaN, not an exception; `_validate`
    reports bad prices), cached on disk where a cache directory is writable."""
    import numba

    try:
        return numba.njit(cache=True, nogil=True, error_model="numpy")(function)
    except RuntimeError:  # no writable cache location (a read-only install)
        return numba.njit(nogil=True, error_model="numpy")(function)


def _first_pass(
    close: np.ndarray,
    w: np.ndarray,
    fee: float,
    s: np.ndarray,
    trade_returns: np.ndarray,
    trade_held: np.ndarray,
) -> tuple[bool, int, float, float, float, float, float, int]:
    """Fill s and the trades; return (valid, trades, final equity, max drawdown, sum, min and
    max of s[1..N-1], non-zero positions).

    s[t] = -fee * |w[t] - w[t-1]| + w[t-1] * (close[t] / close[t-1] - 1), w[-1] = 0, and no price
    move at t = 0; E[t] = E[t-1] * (1 + s[t]). A trade is a maximal run b..e of same-sign non-zero
    decision bars; it holds bars b+1..min(e+1, N-1), and its return is s[b+1..e] plus the last
    held bar's move, minus the entry fee*|w[b]| and, unless still open at the end, the exit
    fee*|w[e]| (at a flip the cost |w[b] - w[b-1]| splits into both trades' fees). The running
    sum of s gives s[b+1..e] as a difference.
    """
    n = close.shape[0]
    valid = True
    nonzero = 0
    k = 0
    start = 0
    cum_at_start = 0.0
    prev_sign = 0
    prev_w = 0.0
    prev_close = 1.0
    running = 0.0
    before = 0.0
    eq = 1.0
    peak = -math.inf
    lowest = math.inf
    total = 0.0
    block = 0.0
    low = math.inf
    high = -math.inf
    for t in range(n):
        c = close[t]
        wt = w[t]
        # NaN fails every comparison
        if not (c > 0.0 and c < math.inf and wt >= -1.0 and wt <= 1.0):
            valid = False
        if wt != 0.0:
            nonzero += 1
        if t == 0:
            pnl = 0.0
            st = -fee * abs(wt) + 0.0  # + 0.0: no negative zero
        else:
            pnl = (c / prev_close - 1.0) * prev_w
            st = -fee * abs(wt - prev_w) + pnl
            block += st
            if (t & (_BLOCK - 1)) == 0:
                total += block
                block = 0.0
            if st < low:
                low = st
            if st > high:
                high = st
        s[t] = st
        before = running
        running += st
        eq *= 1.0 + st
        if eq > peak:
            peak = eq
        drawdown = eq / peak
        if drawdown < lowest:
            lowest = drawdown
        sign = 1 if wt > 0.0 else (-1 if wt < 0.0 else 0)
        if sign != prev_sign:
            if prev_sign != 0:  # the trade of decision bars start..t-1 closed at bar t
                ret = before - cum_at_start - fee * abs(w[start])
                trade_returns[k] = ret + (pnl - fee * abs(prev_w))
                trade_held[k] = t - start
                k += 1
            if sign != 0:
                start = t
                cum_at_start = running
        prev_sign = sign
        prev_w = wt
        prev_close = c
    if prev_sign != 0:  # still open on the last bar: no exit fee, no further move
        trade_returns[k] = running - cum_at_start - fee * abs(w[start])
        trade_held[k] = n - 1 - start
        k += 1
    total += block
    return valid, k, eq, 1.0 - lowest, total, low, high, nonzero


def _second_pass(s: np.ndarray, mean: float) -> tuple[float, float, float, float]:
    """Sums over s[1..N-1] of (s - mean)^2, ^3, ^4 and of min(s, 0)^2."""
    m2 = m3 = m4 = losses = 0.0
    b2 = b3 = b4 = bl = 0.0
    for t in range(1, s.shape[0]):
        x = s[t]
        d = x - mean
        d2 = d * d
        b2 += d2
        b3 += d2 * d
        b4 += d2 * d2
        if x < 0.0:
            bl += x * x
        if (t & (_BLOCK - 1)) == 0:
            m2 += b2
            m3 += b3
            m4 += b4
            losses += bl
            b2 = b3 = b4 = bl = 0.0
    return m2 + b2, m3 + b3, m4 + b4, losses + bl


first_pass = _compile(_first_pass)
second_pass = _compile(_second_pass)
