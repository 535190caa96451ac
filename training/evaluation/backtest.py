"""Vectorized backtest of target positions, with the metrics defined in docs/METRICS.md.

Every evaluation, promotion gate and fitness score in CLM goes through `backtest`, so the
definitions live here once. The code is pure numpy (scipy only for the normal distribution): no loop
over bars, trades are found by run detection, so a million bars take milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtr, ndtri

PERIODS_PER_YEAR: dict[str, int] = {
    "1m": 525_600,
    "5m": 105_120,
    "15m": 35_040,
    "1h": 8_760,
    "4h": 2_190,
    "1d": 365,
}

EULER_MASCHERONI = 0.5772156649


@dataclass(frozen=True)
class BacktestResult:
    """Metrics of one backtest (names as in METRICS.md), its inputs, and the per-bar series.

    `returns` is s[0..N-1] and `equity` is E[0..N-1]; they are left out of `as_dict()`, comparisons
    and repr because they are as long as the input.
    """

    sharpe: float
    sortino: float
    max_drawdown: float
    total_return: float
    cagr: float
    calmar: float
    exposure: float
    trades: int
    win_rate: float
    profit_factor: float
    avg_trade_return: float
    avg_bars_held: float
    psr: float
    dsr: float
    fee: float
    periods_per_year: float
    n_bars: int
    n_trials: int
    returns: np.ndarray = field(repr=False, compare=False)
    equity: np.ndarray = field(repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe scalars: non-finite floats become None.

        An infinite profit factor (winners and no loser) is the one expected non-finite value, so it
        also gets `profit_factor_infinite: True` to tell it apart from "not computable".
        """
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                continue
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            out[f.name] = value
        out["profit_factor_infinite"] = self.profit_factor == math.inf
        return out


def backtest(
    close: ArrayLike,
    positions: ArrayLike,
    *,
    fee: float = 0.0,
    periods_per_year: float = PERIODS_PER_YEAR["1h"],
    n_trials: int = 1,
    trial_sharpes: ArrayLike | None = None,
) -> BacktestResult:
    """Backtest target positions `positions[t]` (decided at the close of bar t, held over bar t+1).

    Conventions beyond METRICS.md, where it leaves a choice:
    - Sharpe, Sortino, exposure, psr and dsr use the N-1 bar returns s[1..N-1] (s[0] carries only
      the first entry cost and no price move). Exposure is the share of t = 1..N-1 with w[t-1] != 0.
    - A series of identical returns has standard deviation 0, so Sharpe 0 (also with one return).
    - A trade opened on the last bar is counted with 0 bars held and its entry cost as its return.
    - CAGR is -1 when equity ends at or below zero (possible only with short positions and a price
      more than doubling in one bar).
    - dsr deflates psr for `n_trials` trials using the sample variance (ddof=1) of `trial_sharpes`,
      the per-bar (not annualized) Sharpe ratios of those trials. With `n_trials` <= 1 there is
      nothing to deflate and dsr equals psr; with more trials `trial_sharpes` is required.
    """
    close_arr = _as_1d_float(close, "close")
    w = _as_1d_float(positions, "positions")
    n = len(close_arr)
    _validate_shape(close_arr, w, fee, periods_per_year)
    trial_variance = _trial_variance(n_trials, trial_sharpes)

    first = _returns_and_equity(close_arr, w, fee)
    if not first.valid:
        _validate(close_arr, w, fee, periods_per_year)  # says what is wrong
    s, equity, max_drawdown = first.s, first.equity, first.max_drawdown
    total_return = float(equity[-1] - 1.0)
    cagr = _cagr(float(equity[-1]), periods_per_year, n)

    bar_returns = s[1:]
    moments, downside_sq, cum_s_at = _second_pass(s, w, first)
    downside = math.sqrt(downside_sq / len(bar_returns))
    sqrt_p = math.sqrt(periods_per_year)
    psr = _psr(moments, 0.0)
    dsr = psr if n_trials <= 1 else _psr(moments, _deflated_benchmark(n_trials, trial_variance))

    trade_returns, bars_held = _trades(w, close_arr, fee, cum_s_at)
    n_trades = len(trade_returns)
    wins = trade_returns[trade_returns > 0].sum()
    losses = -trade_returns[trade_returns < 0].sum()
    if wins == 0:
        profit_factor = 0.0
    elif losses == 0:
        profit_factor = math.inf
    else:
        profit_factor = float(wins / losses)

    return BacktestResult(
        sharpe=moments.sharpe * sqrt_p,
        sortino=moments.mean / downside * sqrt_p if downside > 0 else 0.0,
        max_drawdown=max_drawdown,
        total_return=total_return,
        cagr=cagr,
        calmar=cagr / max_drawdown if max_drawdown > 0 else 0.0,
        exposure=float((first.nonzero_positions - int(w[-1] != 0)) / (n - 1)),
        trades=n_trades,
        win_rate=float(np.count_nonzero(trade_returns > 0) / n_trades) if n_trades else 0.0,
        profit_factor=profit_factor,
        avg_trade_return=float(trade_returns.mean()) if n_trades else 0.0,
        avg_bars_held=float(bars_held.mean()) if n_trades else 0.0,
        psr=psr,
        dsr=dsr,
        fee=float(fee),
        periods_per_year=float(periods_per_year),
        n_bars=n,
        n_trials=int(n_trials),
        returns=s,
        equity=equity,
    )


def probabilistic_sharpe(returns: ArrayLike, sr_benchmark: float = 0.0) -> float:
    """Probability that the true per-bar Sharpe ratio of `returns` exceeds `sr_benchmark`.

    Bailey and Lopez de Prado (2012), as in METRICS.md: per-bar Sharpe (std with ddof=1), biased
    skewness and kurtosis (not excess), T = number of returns. Constant returns have Sharpe 0.
    """
    x = _as_1d_float(returns, "returns")
    _require_finite_returns(x)
    return _psr(_Moments.of(x), float(sr_benchmark))


def deflated_sharpe(returns: ArrayLike, *, n_trials: int, trial_sharpe_variance: float) -> float:
    """PSR against the Sharpe ratio the best of `n_trials` unskilled trials would reach by luck.

    Bailey and Lopez de Prado (2014), as in METRICS.md. `trial_sharpe_variance` is the variance of
    the trials' per-bar Sharpe ratios. With one trial nothing is deflated: the result is PSR(0).
    """
    x = _as_1d_float(returns, "returns")
    _require_finite_returns(x)
    _check_trials(n_trials)
    if not (math.isfinite(trial_sharpe_variance) and trial_sharpe_variance >= 0):
        raise ValueError(
            f"trial_sharpe_variance must be finite and >= 0, got {trial_sharpe_variance!r}"
        )
    moments = _Moments.of(x)
    if n_trials == 1:
        return _psr(moments, 0.0)
    return _psr(moments, _deflated_benchmark(int(n_trials), float(trial_sharpe_variance)))


@dataclass(frozen=True)
class _Moments:
    """Per-bar statistics shared by Sharpe, PSR and DSR, computed in one place."""

    mean: float
    sharpe: float
    skew: float
    kurtosis: float
    count: int

    @classmethod
    def of(cls, x: np.ndarray) -> _Moments:
        mean = float(x.mean())
        if len(x) < 2 or x.min() == x.max():
            return cls(mean=mean, sharpe=0.0, skew=0.0, kurtosis=3.0, count=len(x))
        dev = x - mean
        dev2 = dev * dev
        m2 = float(dev2.mean())
        m3 = float(np.dot(dev2, dev)) / len(x)
        m4 = float(np.dot(dev2, dev2)) / len(x)
        std = math.sqrt(m2 * len(x) / (len(x) - 1))
        return cls(
            mean=mean,
            sharpe=mean / std,
            skew=m3 / m2**1.5,
            kurtosis=m4 / m2**2,
            count=len(x),
        )


def _psr(m: _Moments, sr_benchmark: float) -> float:
    variance = 1.0 - m.skew * m.sharpe + (m.kurtosis - 1.0) / 4.0 * m.sharpe**2
    # Pearson's inequality (kurtosis >= 1 + skew^2) keeps this >= 0; guard against rounding.
    z = (m.sharpe - sr_benchmark) * math.sqrt(m.count - 1) / math.sqrt(max(variance, 1e-300))
    return float(ndtr(z))


def _deflated_benchmark(n_trials: int, trial_variance: float) -> float:
    """Expected maximum per-bar Sharpe of `n_trials` unskilled trials (the DSR's SR*)."""
    g = EULER_MASCHERONI
    expected_max = (1.0 - g) * ndtri(1.0 - 1.0 / n_trials) + g * ndtri(
        1.0 - 1.0 / (n_trials * math.e)
    )
    return math.sqrt(trial_variance) * float(expected_max)


# Bars per block of the two passes below (512 KiB a float array): the temporaries stay in the CPU
# cache, so each pass reads and writes main memory once instead of once per arithmetic step,
# and the blocks are few enough for numpy's per-call cost not to count.
BLOCK = 1 << 16


@dataclass
class _FirstPass:
    """What the first pass computes: s, E and the maximum drawdown, and what it saw on the way
    (whether the inputs are in range, the positions held, the sum and range of s[1..N-1])."""

    s: np.ndarray
    equity: np.ndarray
    max_drawdown: float
    valid: bool
    nonzero_positions: int
    returns_sum: float
    returns_min: float
    returns_max: float


def _returns_and_equity(close: np.ndarray, w: np.ndarray, fee: float) -> _FirstPass:
    """s[0..N-1], E[0..N-1] and the maximum drawdown, block by block.

    s[t] = -fee * |w[t] - w[t-1]| + w[t-1] * (close[t] / close[t-1] - 1), with w[-1] = 0 and
    no price move at t = 0. Each block continues the previous one's running product and peak
    from its last value, which is exactly what one cumprod and one maximum.accumulate over the
    whole series compute, element by element (IEEE products commute), so the values are the
    same to the last bit. The prices and positions are checked on the way (`valid`): a bad
    series is found without a pass of its own, and `_validate` then says what is wrong.
    """
    n = len(close)
    s = np.empty(n)
    equity = np.empty(n)
    pnl = np.empty(BLOCK)
    peak = np.empty(BLOCK)
    carry_equity, carry_peak, lowest = 1.0, -math.inf, math.inf
    valid, nonzero = True, 0
    total, low, high = 0.0, math.inf, -math.inf
    with np.errstate(all="ignore"):  # only a series `_validate` refuses can overflow
        for lo in range(0, n, BLOCK):
            hi = min(lo + BLOCK, n)
            sb, eb, pb, kb = s[lo:hi], equity[lo:hi], pnl[: hi - lo], peak[: hi - lo]
            cb, wb = close[lo:hi], w[lo:hi]
            # NaN fails every comparison
            valid &= bool(cb.min() > 0 and cb.max() < math.inf)
            valid &= bool(wb.min() >= -1.0 and wb.max() <= 1.0)
            nonzero += int(np.count_nonzero(wb))
            first = 1 if lo == 0 else 0  # the first bar has no previous position nor price
            if first:
                sb[0] = w[0]
                pb[0] = 0.0
            np.subtract(w[lo + first : hi], w[lo + first - 1 : hi - 1], out=sb[first:])
            np.abs(sb, out=sb)
            sb *= -fee
            moved = pb[first:]
            np.divide(close[lo + first : hi], close[lo + first - 1 : hi - 1], out=moved)
            moved -= 1.0
            moved *= w[lo + first - 1 : hi - 1]
            sb += pb
            xb = sb[first:]
            if len(xb):
                total += float(xb.sum())
                low, high = min(low, float(xb.min())), max(high, float(xb.max()))
            np.add(sb, 1.0, out=eb)
            eb[0] *= carry_equity
            np.multiply.accumulate(eb, out=eb)
            np.maximum.accumulate(eb, out=kb)
            np.maximum(kb, carry_peak, out=kb)
            carry_equity, carry_peak = float(eb[-1]), float(kb[-1])
            np.divide(eb, kb, out=kb)
            lowest = min(lowest, float(kb.min()))
    return _FirstPass(
        s=s, equity=equity, max_drawdown=float(1.0 - lowest), valid=valid,
        nonzero_positions=nonzero, returns_sum=total, returns_min=low, returns_max=high,
    )  # fmt: skip


@dataclass
class _TradeSums:
    """The running sum of s at the bars where trades start and end (for `_trades`)."""

    starts: np.ndarray
    ends: np.ndarray
    at_starts: np.ndarray
    at_ends: np.ndarray


def _trade_bounds(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last decision bar of each trade: a maximal run of same-sign non-zero bars."""
    n = len(w)
    sign = (w > 0).view(np.int8) - (w < 0).view(np.int8)
    nonzero = sign != 0
    new_sign = np.empty(n, dtype=bool)
    new_sign[0] = True
    np.not_equal(sign[1:], sign[:-1], out=new_sign[1:])
    starts = np.flatnonzero(nonzero & new_sign)
    run_ends = np.empty(n, dtype=bool)
    run_ends[:-1] = new_sign[1:]
    run_ends[-1] = True
    return starts, np.flatnonzero(nonzero & run_ends)


def _second_pass(
    s: np.ndarray, w: np.ndarray, first: _FirstPass
) -> tuple[_Moments, float, _TradeSums]:
    """The moments of s[1..N-1], the sum of its squared losses, and the running sum of s at
    the trades' first and last bars, in one blocked pass over s.

    The sums of the mean and the higher moments add block by block (their last digits may
    differ from one sum over the series, as two BLAS builds' would). The running sum continues
    each block from the previous one's last value: the same additions as one cumsum, in the same
    order.
    """
    count = len(s) - 1
    mean = first.returns_sum / count
    starts, ends = _trade_bounds(w)
    sums = _TradeSums(starts, ends, np.empty(len(starts)), np.empty(len(ends)))
    dev = np.empty(BLOCK)
    dev2 = np.empty(BLOCK)
    scratch = np.empty(BLOCK)
    running = np.empty(BLOCK)
    m2 = m3 = m4 = losses = 0.0
    carry = 0.0
    for lo in range(0, len(s), BLOCK):
        hi = min(lo + BLOCK, len(s))
        sb, rb = s[lo:hi], running[: hi - lo]
        np.add(sb[:1], carry, out=rb[:1])
        rb[1:] = sb[1:]
        np.add.accumulate(rb, out=rb)
        carry = float(rb[-1])
        for bounds, at in ((sums.starts, sums.at_starts), (sums.ends, sums.at_ends)):
            i, j = np.searchsorted(bounds, (lo, hi))
            at[i:j] = rb[bounds[i:j] - lo]
        xb = sb[1:] if lo == 0 else sb
        if not len(xb):
            continue
        # numpy's own sums, not BLAS dot: a threaded BLAS costs more to start than to add up
        # one block
        db, d2, product = dev[: len(xb)], dev2[: len(xb)], scratch[: len(xb)]
        np.subtract(xb, mean, out=db)
        np.multiply(db, db, out=d2)
        m2 += float(d2.sum())
        m3 += float(np.multiply(d2, db, out=product).sum())
        m4 += float(np.multiply(d2, d2, out=product).sum())
        np.minimum(xb, 0.0, out=db)
        losses += float(np.multiply(db, db, out=product).sum())
    if count < 2 or first.returns_min == first.returns_max:
        moments = _Moments(mean=mean, sharpe=0.0, skew=0.0, kurtosis=3.0, count=count)
    else:
        m2, m3, m4 = m2 / count, m3 / count, m4 / count
        std = math.sqrt(m2 * count / (count - 1))
        moments = _Moments(
            mean=mean, sharpe=mean / std, skew=m3 / m2**1.5, kurtosis=m4 / m2**2, count=count
        )
    return moments, losses, sums


def _trades(
    w: np.ndarray, close: np.ndarray, fee: float, sums: _TradeSums
) -> tuple[np.ndarray, np.ndarray]:
    """Return and bars held of each trade: a maximal run of same-sign non-zero decision bars.

    Decision bars b..e hold bars b+1..min(e+1, N-1). The trade's return is s[b+1..e] (price moves
    and size changes inside the run) plus the last held bar's move pnl[e+1], minus the entry
    fee*|w[b]| and, unless the trade is still open at the end, the exit fee*|w[e]|. At a flip
    |w[b] - w[b-1]| = |w[b]| + |w[b-1]|, so this splits the flip's cost exactly as METRICS.md says.
    """
    n = len(w)
    starts, ends = sums.starts, sums.ends
    if len(starts) == 0:
        return np.empty(0), np.empty(0, dtype=np.int64)
    closed = ends < n - 1
    last_held = np.minimum(ends + 1, n - 1)
    # pnl[e + 1] = (close[e + 1] / close[e] - 1) * w[e], as _returns_and_equity computes it
    move = close[last_held] / close[last_held - 1]
    move -= 1.0
    move *= w[last_held - 1]
    returns = sums.at_ends - sums.at_starts - fee * np.abs(w[starts])
    returns += np.where(closed, move - fee * np.abs(w[ends]), 0.0)
    return returns, last_held - starts


def _cagr(final_equity: float, periods_per_year: float, n_bars: int) -> float:
    if final_equity <= 0:
        return -1.0
    try:
        return math.expm1(math.log(final_equity) * periods_per_year / (n_bars - 1))
    except OverflowError:
        return math.inf


def _check_trials(n_trials: int) -> None:
    if isinstance(n_trials, bool) or int(n_trials) != n_trials or n_trials < 1:
        raise ValueError(f"n_trials must be an integer >= 1, got {n_trials!r}")


def _trial_variance(n_trials: int, trial_sharpes: ArrayLike | None) -> float:
    _check_trials(n_trials)
    if trial_sharpes is None:
        if n_trials > 1:
            raise ValueError(
                f"n_trials={n_trials} needs trial_sharpes (the trials' per-bar Sharpe ratios) "
                "to deflate the Sharpe ratio"
            )
        return 0.0
    sharpes = _as_1d_float(trial_sharpes, "trial_sharpes")
    if len(sharpes) < 2 or not np.isfinite(sharpes).all():
        raise ValueError("trial_sharpes needs at least 2 values, all finite")
    return float(np.var(sharpes, ddof=1))


def _as_1d_float(values: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _require_finite_returns(x: np.ndarray) -> None:
    if len(x) == 0 or not np.isfinite(x).all():
        raise ValueError("returns must be a non-empty series of finite numbers")


def _validate_shape(close: np.ndarray, w: np.ndarray, fee: float, periods_per_year: float) -> None:
    """What can be checked without reading the series."""
    if len(close) != len(w):
        raise ValueError(f"close has {len(close)} bars but positions has {len(w)}")
    if len(close) < 2:
        raise ValueError(f"a backtest needs at least 2 bars, got {len(close)}")
    if not 0 <= fee < 1:
        raise ValueError(f"fee must be a fraction in [0, 1), got {fee!r}")
    if not (math.isfinite(periods_per_year) and periods_per_year > 0):
        raise ValueError(f"periods_per_year must be positive, got {periods_per_year!r}")


def _validate(close: np.ndarray, w: np.ndarray, fee: float, periods_per_year: float) -> None:
    if len(close) != len(w):
        raise ValueError(f"close has {len(close)} bars but positions has {len(w)}")
    if len(close) < 2:
        raise ValueError(f"a backtest needs at least 2 bars, got {len(close)}")
    # min/max first: one pass each, and NaN makes both comparisons fail.
    if not (close.min() > 0 and close.max() < math.inf):
        if np.isnan(close).any() or np.isinf(close).any():
            raise ValueError("close contains NaN or infinite prices")
        raise ValueError(f"close must be positive, found {float(close.min())}")
    if not (w.min() >= -1.0 and w.max() <= 1.0):
        if np.isnan(w).any():
            raise ValueError("positions contain NaN")
        raise ValueError(
            f"positions must lie in [-1, 1], found [{float(w.min())}, {float(w.max())}]"
        )
    if not 0 <= fee < 1:
        raise ValueError(f"fee must be a fraction in [0, 1), got {fee!r}")
    if not (math.isfinite(periods_per_year) and periods_per_year > 0):
        raise ValueError(f"periods_per_year must be positive, got {periods_per_year!r}")
