"""Vectorized backtest of target positions, with the metrics defined in docs/METRICS.md.

Every evaluation, promotion gate and fitness score in CLM goes through `backtest`, so the
definitions live here once. The loops over bars are two compiled passes (`_backtest_kernel`,
numba), so a million bars take a few milliseconds; the metrics are assembled here from their sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from functools import cached_property
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
    and repr because they are as long as the input. `equity` is built from `returns` on first
    use (the same products, in the same order, as the backtest's running equity), since most
    callers only need the metrics.
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

    @cached_property
    def equity(self) -> np.ndarray:
        """E[t] = E[t-1] * (1 + s[t]), E[-1] = 1."""
        return np.cumprod(1.0 + self.returns)

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

    passes = _passes(close_arr, w, fee)
    if not passes.valid:
        _validate(close_arr, w)  # says what is wrong
    s, moments, max_drawdown = passes.s, passes.moments, passes.max_drawdown
    total_return = passes.final_equity - 1.0
    cagr = _cagr(passes.final_equity, periods_per_year, n)
    downside = math.sqrt(passes.squared_losses / (n - 1))
    sqrt_p = math.sqrt(periods_per_year)
    psr = _psr(moments, 0.0)
    dsr = psr if n_trials <= 1 else _psr(moments, _deflated_benchmark(n_trials, trial_variance))

    trade_returns, bars_held = passes.trade_returns, passes.bars_held
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
        exposure=float((passes.nonzero_positions - int(w[-1] != 0)) / (n - 1)),
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
            return cls.from_sums(mean, 0.0, 0.0, 0.0, count=len(x), constant=True)
        dev = x - mean
        dev2 = dev * dev
        return cls.from_sums(
            mean,
            float(dev2.sum()),
            float(np.dot(dev2, dev)),
            float(np.dot(dev2, dev2)),
            count=len(x),
            constant=False,
        )

    @classmethod
    def from_sums(
        cls, mean: float, sum2: float, sum3: float, sum4: float, *, count: int, constant: bool
    ) -> _Moments:
        """From the sums of the 2nd, 3rd and 4th powers of the deviations from the mean. A
        constant series (or one return) has Sharpe 0, skew 0 and kurtosis 3."""
        if count < 2 or constant:
            return cls(mean=mean, sharpe=0.0, skew=0.0, kurtosis=3.0, count=count)
        m2, m3, m4 = sum2 / count, sum3 / count, sum4 / count
        std = math.sqrt(m2 * count / (count - 1))
        return cls(
            mean=mean, sharpe=mean / std, skew=m3 / m2**1.5, kurtosis=m4 / m2**2, count=count
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


@dataclass
class _Passes:
    """What the compiled passes over the bars give (`_backtest_kernel`)."""

    valid: bool
    s: np.ndarray
    final_equity: float
    max_drawdown: float
    nonzero_positions: int
    moments: _Moments
    squared_losses: float
    trade_returns: np.ndarray
    bars_held: np.ndarray


def _passes(close: np.ndarray, w: np.ndarray, fee: float) -> _Passes:
    """s, the final equity, the drawdown, the moments of s[1..N-1] and the trades, in two
    compiled passes.

    The inputs are checked on the way (`valid`): a bad series is found without a pass of its
    own, and `_validate` then says what is wrong.
    """
    from training.evaluation import _backtest_kernel as kernel

    close = np.ascontiguousarray(close)
    w = np.ascontiguousarray(w)
    n = len(close)
    s = np.empty(n)
    # At most one trade per bar; only the pages of the trades found are ever touched.
    trade_returns = np.empty(n)
    bars_held = np.empty(n, dtype=np.int64)
    valid, trades, final_equity, max_drawdown, total, low, high, nonzero = kernel.first_pass(
        close, w, float(fee), s, trade_returns, bars_held
    )
    count = n - 1
    mean = total / count
    if not valid:
        moments = _Moments(mean=0.0, sharpe=0.0, skew=0.0, kurtosis=3.0, count=count)
        return _Passes(False, s, 1.0, 0.0, 0, moments, 0.0, np.empty(0), np.empty(0))
    m2, m3, m4, losses = kernel.second_pass(s, mean)
    moments = _Moments.from_sums(mean, m2, m3, m4, count=count, constant=low == high)
    return _Passes(
        valid=True,
        s=s,
        final_equity=float(final_equity),
        max_drawdown=float(max_drawdown),
        nonzero_positions=int(nonzero),
        moments=moments,
        squared_losses=float(losses),
        trade_returns=trade_returns[:trades].copy(),
        bars_held=bars_held[:trades].copy(),
    )


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


def _validate(close: np.ndarray, w: np.ndarray) -> None:
    """Says what is wrong with the series, once `_validate_shape` passed and a pass found them
    out of range."""
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
