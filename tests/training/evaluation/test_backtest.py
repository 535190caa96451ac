"""The backtest against hand-computed examples and a literal, loop-based reading of METRICS.md."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from training.evaluation.backtest import (
    PERIODS_PER_YEAR,
    backtest,
    deflated_sharpe,
    probabilistic_sharpe,
)


def test_flat_strategy_has_zero_everything_and_psr_one_half() -> None:
    r = backtest([100.0, 110.0, 99.0], [0.0, 0.0, 0.0], fee=0.001)

    assert r.returns.tolist() == [0.0, 0.0, 0.0]
    assert r.equity.tolist() == [1.0, 1.0, 1.0]
    for name in ("sharpe", "sortino", "max_drawdown", "total_return", "cagr", "calmar"):
        assert getattr(r, name) == 0.0, name
    assert (r.exposure, r.trades, r.win_rate, r.profit_factor) == (0.0, 0, 0.0, 0.0)
    assert (r.avg_trade_return, r.avg_bars_held) == (0.0, 0.0)
    assert r.psr == r.dsr == 0.5


def test_always_long_without_fee() -> None:
    # a = [+10 %, -10 %, +10 %]
    r = backtest([100.0, 110.0, 99.0, 108.9], [1.0, 1.0, 1.0, 1.0], periods_per_year=4)

    assert r.returns == pytest.approx([0.0, 0.1, -0.1, 0.1])
    assert r.equity == pytest.approx([1.0, 1.1, 0.99, 1.089])
    assert r.total_return == pytest.approx(0.089)
    assert r.max_drawdown == pytest.approx(0.1)  # 1 - 0.99 / 1.1
    # mean 1/30, std (ddof=1) sqrt(1/75), P = 4
    assert r.sharpe == pytest.approx((1 / 30) / math.sqrt(1 / 75) * 2)
    # downside deviation sqrt(0.01 / 3)
    assert r.sortino == pytest.approx((1 / 30) / math.sqrt(0.01 / 3) * 2)
    assert r.cagr == pytest.approx(1.089 ** (4 / 3) - 1)
    assert r.calmar == pytest.approx(r.cagr / 0.1)
    assert r.exposure == 1.0
    # one trade, still open at the end: closed at the last close, no exit cost
    assert (r.trades, r.win_rate, r.avg_bars_held) == (1, 1.0, 3.0)
    assert r.avg_trade_return == pytest.approx(0.1)
    assert r.profit_factor == math.inf


def test_entry_fee_is_paid_on_the_first_bar_and_no_exit_fee_at_the_end() -> None:
    r = backtest([100.0, 110.0, 99.0, 108.9], [1.0, 1.0, 1.0, 1.0], fee=0.001)

    assert r.returns == pytest.approx([-0.001, 0.1, -0.1, 0.1])
    assert r.avg_trade_return == pytest.approx(0.1 - 0.001)
    assert r.total_return == pytest.approx(0.999 * 1.1 * 0.9 * 1.1 - 1)


def test_flip_splits_its_cost_between_the_two_trades() -> None:
    # long for bar 1 (+10 %), flip short for bars 2 (+10 %) and 3 (-10 %), flat at the end
    r = backtest([100.0, 110.0, 121.0, 108.9], [1.0, -1.0, -1.0, 0.0], fee=0.01)

    # turnover [1, 2, 0, 1]; pnl [0, 0.1, -0.1, 0.1]
    assert r.returns == pytest.approx([-0.01, 0.08, -0.1, 0.09])
    assert r.equity == pytest.approx([0.99, 1.0692, 0.96228, 1.0488852])
    assert r.max_drawdown == pytest.approx(0.1)
    # long: 0.1 - 0.01 entry - 0.01 exit; short: -0.1 + 0.1 - 0.01 entry - 0.01 exit
    assert r.trades == 2
    assert r.win_rate == 0.5
    assert r.profit_factor == pytest.approx(0.08 / 0.02)
    assert r.avg_trade_return == pytest.approx((0.08 - 0.02) / 2)
    assert r.avg_bars_held == 1.5
    assert r.exposure == 1.0


def test_size_change_stays_in_the_trade_and_pays_its_fee() -> None:
    r = backtest([100.0, 100.0, 110.0, 110.0], [0.5, 1.0, 0.0, 0.0], fee=0.01)

    # turnover [0.5, 0.5, 1, 0]; the trade holds bars 1 (0 %) and 2 (+10 % on full size)
    assert r.returns == pytest.approx([-0.005, -0.005, 0.09, 0.0])
    assert r.trades == 1
    assert r.avg_trade_return == pytest.approx(0.1 - 0.005 - 0.005 - 0.01)
    assert r.avg_bars_held == 2.0
    assert r.exposure == pytest.approx(2 / 3)


def test_drawdown_is_measured_from_the_running_peak() -> None:
    # equity 1, 1.2, 0.9, 1.5, 1.05, 1.26: drawdowns 25 % then 30 %
    close = [100.0, 120.0, 90.0, 150.0, 105.0, 126.0]
    r = backtest(close, np.ones(6))

    assert r.equity == pytest.approx([1.0, 1.2, 0.9, 1.5, 1.05, 1.26])
    assert r.max_drawdown == pytest.approx(0.3)


def test_short_position_earns_on_a_fall() -> None:
    r = backtest([100.0, 90.0], [-1.0, -1.0])

    assert r.total_return == pytest.approx(0.1)
    assert (r.trades, r.win_rate) == (1, 1.0)


def test_runs_of_one_sign_are_one_trade() -> None:
    close = np.linspace(100, 110, 7)
    r = backtest(close, [1.0, 0.5, -0.5, -1.0, 0.0, 0.0, 1.0])

    # long 0..1, short 2..3, long opened on the last bar (held 0 bars)
    assert r.trades == 3
    assert r.avg_bars_held == pytest.approx((2 + 2 + 0) / 3)


def test_trade_opened_on_the_last_bar_costs_its_entry() -> None:
    r = backtest([100.0, 101.0, 102.0], [0.0, 0.0, 1.0], fee=0.002)

    assert r.trades == 1
    assert r.avg_trade_return == pytest.approx(-0.002)
    assert r.profit_factor == 0.0
    assert r.exposure == 0.0


def test_no_losing_trade_gives_infinite_profit_factor_and_a_json_flag() -> None:
    r = backtest([100.0, 110.0, 121.0], [1.0, 1.0, 0.0])

    assert r.profit_factor == math.inf
    d = r.as_dict()
    assert d["profit_factor"] is None
    assert d["profit_factor_infinite"] is True
    assert "returns" not in d and "equity" not in d
    json.dumps(d, allow_nan=False)


def test_as_dict_carries_every_metric_and_input() -> None:
    d = backtest([100.0, 101.0, 102.0], [1.0, -1.0, 0.0], fee=0.001).as_dict()

    assert set(d) == {
        "sharpe", "sortino", "max_drawdown", "total_return", "cagr", "calmar", "exposure",
        "trades", "win_rate", "profit_factor", "avg_trade_return", "avg_bars_held", "psr", "dsr",
        "fee", "periods_per_year", "n_bars", "n_trials", "profit_factor_infinite",
    }  # fmt: skip
    assert d["profit_factor_infinite"] is False
    assert d["n_bars"] == 3 and d["fee"] == 0.001


def _reference(close: np.ndarray, w: np.ndarray, fee: float) -> tuple[list[float], list[int]]:
    """METRICS.md's trade rules read literally, one bar at a time."""
    n = len(close)
    trades: list[float] = []
    held: list[int] = []
    current: float | None = None
    bars = 0
    prev = 0.0
    for t in range(n):
        if t > 0 and prev != 0:
            current += prev * (close[t] / close[t - 1] - 1)
            bars += 1
        now = w[t]
        if current is not None and np.sign(now) != np.sign(prev):
            trades.append(current - fee * abs(prev))
            held.append(bars)
            current = None
        if now != 0 and current is None:
            current, bars = -fee * abs(now), 0
        elif current is not None:
            current -= fee * abs(now - prev)
        prev = now
    if current is not None:
        trades.append(current)
        held.append(bars)
    return trades, held


@pytest.mark.parametrize("seed", range(5))
def test_trades_match_a_bar_by_bar_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.choice([-1.0, -0.5, 0.0, 0.0, 0.3, 1.0], 200)
    w = np.repeat(values, rng.integers(1, 5, 200))
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(w))))
    fee = 0.0007

    r = backtest(close, w, fee=fee)
    trades, held = _reference(close, w, fee)

    assert r.trades == len(trades)
    assert r.avg_trade_return == pytest.approx(np.mean(trades), rel=1e-9)
    assert r.avg_bars_held == pytest.approx(np.mean(held))
    t = np.array(trades)
    assert r.win_rate == pytest.approx(np.mean(t > 0))
    assert r.profit_factor == pytest.approx(t[t > 0].sum() / -t[t < 0].sum(), rel=1e-9)
    # trade returns are additive: together they are the sum of the bar returns
    assert np.sum(trades) == pytest.approx(r.returns.sum(), rel=1e-9)


def test_long_series_metrics_equal_numpy_over_the_whole_series() -> None:
    """The compiled passes add in blocks; over many blocks (and a partial last one) the
    figures still equal numpy's sums over the whole series."""
    rng = np.random.default_rng(7)
    n = 200_003
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    w = np.repeat(rng.choice([-1.0, -0.4, 0.0, 0.7, 1.0], n // 37 + 1), 37)[:n]
    fee = 0.0005
    r = backtest(close, w, fee=fee, periods_per_year=8_760)

    prev = np.concatenate([[0.0], w[:-1]])
    moves = np.concatenate([[0.0], close[1:] / close[:-1] - 1.0])
    s = -fee * np.abs(w - prev) + prev * moves
    assert np.allclose(r.returns, s, rtol=0, atol=1e-15)
    assert np.allclose(r.equity, np.cumprod(1 + s), rtol=1e-12)
    x = s[1:]
    assert r.sharpe == pytest.approx(x.mean() / x.std(ddof=1) * math.sqrt(8_760), rel=1e-12)
    downside = math.sqrt(np.mean(np.minimum(x, 0) ** 2))
    assert r.sortino == pytest.approx(x.mean() / downside * math.sqrt(8_760), rel=1e-12)
    equity = np.cumprod(1 + s)
    assert r.max_drawdown == pytest.approx(1 - np.min(equity / np.maximum.accumulate(equity)))
    trades, _ = _reference(close, w, fee)
    assert r.trades == len(trades)
    assert r.avg_trade_return == pytest.approx(np.mean(trades), rel=1e-9)


def _returns() -> np.ndarray:
    rng = np.random.default_rng(42)
    return rng.standard_t(4, 2_000) * 0.01 + 0.0008


def test_psr_matches_the_formula_computed_with_scipy() -> None:
    x = _returns()
    sr = x.mean() / x.std(ddof=1)
    g3 = stats.skew(x)
    g4 = stats.kurtosis(x, fisher=False)
    for benchmark in (0.0, 0.02):
        z = (sr - benchmark) * math.sqrt(len(x) - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2)
        assert probabilistic_sharpe(x, benchmark) == pytest.approx(stats.norm.cdf(z), rel=1e-10)


def test_dsr_matches_the_formula_computed_with_scipy() -> None:
    x = _returns()
    k, v = 20, 0.0004
    gamma = 0.5772156649
    sr_star = math.sqrt(v) * (
        (1 - gamma) * stats.norm.ppf(1 - 1 / k) + gamma * stats.norm.ppf(1 - 1 / (k * math.e))
    )

    dsr = deflated_sharpe(x, n_trials=k, trial_sharpe_variance=v)

    assert dsr == pytest.approx(probabilistic_sharpe(x, sr_star), rel=1e-12)
    assert dsr < probabilistic_sharpe(x)


def test_dsr_with_one_trial_is_psr() -> None:
    x = _returns()
    assert deflated_sharpe(x, n_trials=1, trial_sharpe_variance=0.5) == probabilistic_sharpe(x)


def test_backtest_psr_and_dsr_use_the_bar_returns_after_the_first() -> None:
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0005, 0.01, 1_000)))
    w = np.sign(rng.normal(0.3, 1, 1_000))
    trial_sharpes = [0.01, 0.03, -0.02, 0.05]

    plain = backtest(close, w, fee=0.0005)
    deflated = backtest(close, w, fee=0.0005, n_trials=4, trial_sharpes=trial_sharpes)

    bar_returns = plain.returns[1:]
    assert plain.psr == pytest.approx(probabilistic_sharpe(bar_returns), rel=1e-12)
    assert plain.dsr == plain.psr
    expected = deflated_sharpe(
        bar_returns, n_trials=4, trial_sharpe_variance=float(np.var(trial_sharpes, ddof=1))
    )
    assert deflated.dsr == pytest.approx(expected, rel=1e-12)
    assert deflated.psr == plain.psr and deflated.n_trials == 4


def test_periods_per_year_match_metrics_md() -> None:
    assert PERIODS_PER_YEAR == {
        "1m": 525_600, "5m": 105_120, "15m": 35_040, "1h": 8_760, "4h": 2_190, "1d": 365,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("close", "positions", "kwargs", "message"),
    [
        ([100.0, 101.0, 102.0], [0.0, 1.0], {}, "close has 3 bars but positions has 2"),
        ([100.0], [1.0], {}, "at least 2 bars"),
        ([100.0, np.nan, 102.0], [0.0, 1.0, 1.0], {}, "NaN or infinite"),
        ([100.0, np.inf, 102.0], [0.0, 1.0, 1.0], {}, "NaN or infinite"),
        ([100.0, 0.0, 102.0], [0.0, 1.0, 1.0], {}, "must be positive"),
        ([100.0, -5.0, 102.0], [0.0, 1.0, 1.0], {}, "must be positive"),
        ([100.0, 101.0, 102.0], [0.0, np.nan, 1.0], {}, "positions contain NaN"),
        ([100.0, 101.0, 102.0], [0.0, 1.5, 1.0], {}, r"\[-1, 1\]"),
        ([100.0, 101.0, 102.0], [0.0, -2.0, 1.0], {}, r"\[-1, 1\]"),
        ([100.0, 101.0, 102.0], [0.0, 1.0, 1.0], {"fee": -0.001}, "fee"),
        ([100.0, 101.0, 102.0], [0.0, 1.0, 1.0], {"fee": float("nan")}, "fee"),
        ([100.0, 101.0, 102.0], [0.0, 1.0, 1.0], {"n_trials": 0}, "n_trials"),
        ([100.0, 101.0, 102.0], [0.0, 1.0, 1.0], {"n_trials": 3}, "trial_sharpes"),
        ([[100.0, 101.0]], [[0.0, 1.0]], {}, "one-dimensional"),
    ],
)
def test_bad_input_is_refused(close, positions, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        backtest(close, positions, **kwargs)
