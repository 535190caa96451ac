"""Speed of training.evaluation.backtest against vectorbt and backtesting.py on the same target
positions.

Usage: .venv/bin/python benchmarks/bench_backtest.py [--bars 1000000] [--trades 10000]

Positions are runs of -1, 0 and +1 (no size changes inside a run, so every library's idea of a trade
is the same: a maximal run of one sign), decided at a bar's close and filled at that close. The
trade counts of the three must agree; a difference is printed. The market is the synthetic
mean-reverting regime, whose price stays near its start over a million bars: over 114 years of a
trending market the price moves by orders of magnitude and, with fees eating equity, the order
sizes of vectorbt and backtesting.py (whole units) would round to nothing and drop trades.
vectorbt and backtesting.py are benchmark-only dependencies (`pip install .[bench]`); a library
that cannot be imported or run is reported and skipped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")  # backtesting.py's progress bar

from training.data.synthetic import generate_bars
from training.evaluation.backtest import backtest

FEE = 0.0005


def target_positions(n_bars: int, n_trades: int, seed: int) -> np.ndarray:
    """Runs of -1/0/+1, each run a different value from the one before, flat on the first bar.

    Two runs in three are non-flat, so about 1.5 * n_trades runs give n_trades trades.
    """
    rng = np.random.default_rng(seed)
    n_runs = int(1.5 * n_trades)
    starts = np.sort(rng.choice(np.arange(1, n_bars), n_runs - 1, replace=False))
    # each run moves to one of the two other values: a random walk on {-1, 0, 1} mod 3
    values = (np.cumsum(rng.integers(1, 3, n_runs)) % 3 - 1).astype(np.float64)
    values[0] = 0.0
    return np.repeat(values, np.diff(np.concatenate([[0], starts, [n_bars]])))


def best_of(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def report(name: str, seconds: float, n_bars: int, trades: int | None, note: str = "") -> None:
    count = "-" if trades is None else f"{trades:,}"
    print(
        f"{name:<34} {seconds * 1e3:>10.1f} ms {n_bars / seconds:>14,.0f} bars/s {count:>8} trades"
        f"  {note}"
    )


def run_vectorbt(close: np.ndarray, w: np.ndarray) -> int | None:
    try:
        import vectorbt as vbt
    except Exception as exc:  # any import failure means "not available here"
        print(f"{'vectorbt':<34} not available: {type(exc).__name__}: {exc}")
        return None
    # An order only where the target changes; NaN means "no order on this bar".
    changes = np.empty(len(w), dtype=bool)
    changes[0] = w[0] != 0
    changes[1:] = w[1:] != w[:-1]
    size = np.where(changes, w, np.nan)

    def simulate() -> object:
        return vbt.Portfolio.from_orders(
            close, size=size, size_type="targetpercent", fees=FEE, init_cash=1e9, freq="1h"
        )

    def simulate_and_measure() -> int:
        """The metrics training.evaluation.backtest returns, so the comparison is like for like."""
        portfolio = simulate()
        portfolio.total_return()
        portfolio.sharpe_ratio()
        portfolio.sortino_ratio()
        portfolio.max_drawdown()
        portfolio.annualized_return()
        positions = portfolio.positions
        positions.win_rate()
        positions.profit_factor()
        positions.returns.mean()
        return int(positions.count())

    try:
        started = time.perf_counter()
        simulate_and_measure()
        first = time.perf_counter() - started
        sim_seconds, _ = best_of(simulate, 3)
        seconds, trades = best_of(simulate_and_measure, 3)
    except Exception as exc:
        print(f"{'vectorbt':<34} failed: {type(exc).__name__}: {exc}")
        return None
    name = f"vectorbt {vbt.__version__}"
    report(f"{name} from_orders only", sim_seconds, len(close), None)
    report(f"{name} + metrics", seconds, len(close), trades, f"(first call {first:.1f} s: numba)")
    return trades


def run_vectorbt_signals(
    close: np.ndarray, w: np.ndarray, ours: Callable[[], object], repeat: int
) -> int | None:
    """vectorbt's Portfolio.from_signals plus stats() against training.evaluation.backtest,
    alternating call by call so both see the same machine load; prints the ratio of medians."""
    try:
        import vectorbt as vbt
    except Exception as exc:
        print(f"{'vectorbt from_signals':<34} not available: {type(exc).__name__}: {exc}")
        return None
    previous = np.concatenate([[0.0], w[:-1]])
    signals = {
        "entries": (w == 1) & (previous != 1),
        "exits": (w == 0) & (previous == 1),
        # A flip is an opposite entry alone: vectorbt closes the position and opens the other.
        "short_entries": (w == -1) & (previous != -1),
        "short_exits": (w == 0) & (previous == -1),
    }

    def theirs() -> int:
        portfolio = vbt.Portfolio.from_signals(close, **signals, fees=FEE, init_cash=1e9, freq="1h")
        stats = portfolio.stats()
        return int(stats["Total Trades"])

    try:
        started = time.perf_counter()
        theirs()
        first = time.perf_counter() - started
        mine, other = [], []
        trades = 0
        for _ in range(repeat):
            started = time.perf_counter()
            ours()
            mine.append(time.perf_counter() - started)
            started = time.perf_counter()
            trades = theirs()
            other.append(time.perf_counter() - started)
    except Exception as exc:
        print(f"{'vectorbt from_signals':<34} failed: {type(exc).__name__}: {exc}")
        return None
    ratio = statistics.median(other) / statistics.median(mine)
    report(
        "training.evaluation.backtest (alt.)", statistics.median(mine), len(close), None,
        f"median of {repeat}, alternating with the next line",
    )  # fmt: skip
    report(
        f"vectorbt {vbt.__version__} from_signals + stats", statistics.median(other), len(close),
        trades, f"(first call {first:.1f} s: numba)",
    )  # fmt: skip
    print(f"{'ratio (vectorbt / ours, medians)':<34} {ratio:>10.1f}x")
    return trades


def run_backtesting_py(close: np.ndarray, w: np.ndarray, timestamps: np.ndarray) -> int | None:
    try:
        import backtesting
        import pandas as pd
        from backtesting import Backtest, Strategy
    except Exception as exc:
        print(f"{'backtesting.py':<34} not available: {type(exc).__name__}: {exc}")
        return None

    targets = w

    class TargetPositions(Strategy):
        def init(self) -> None:
            self.previous = 0.0

        def next(self) -> None:
            target = targets[len(self.data) - 1]
            if target == self.previous:
                return
            if self.position:
                self.position.close()
            if target > 0:
                self.buy(size=0.99)
            elif target < 0:
                self.sell(size=0.99)
            self.previous = target

    frame = pd.DataFrame(
        {"Open": close, "High": close, "Low": close, "Close": close},
        index=pd.DatetimeIndex(timestamps),
    )
    bt = Backtest(
        frame,
        TargetPositions,
        cash=1e12,  # whole units only: a large account keeps rounding negligible
        commission=FEE,
        trade_on_close=True,
        finalize_trades=True,
    )
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            seconds, stats = best_of(bt.run, 1)
    except Exception as exc:
        print(f"{'backtesting.py':<34} failed: {type(exc).__name__}: {exc}")
        return None
    trades = int(stats["# Trades"])
    note = f"({len(caught)} warnings, first: {caught[0].message})" if caught else ""
    report(f"backtesting.py {backtesting.__version__}", seconds, len(close), trades, note)
    return trades


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--trades", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--backtesting-bars",
        type=int,
        default=None,
        help="run backtesting.py (a Python loop over bars) on the first N bars only",
    )
    parser.add_argument("--repeat", type=int, default=9, help="alternating runs per library")
    parser.add_argument("--skip-backtesting-py", action="store_true")
    args = parser.parse_args()

    bars, _ = generate_bars(args.bars, seed=args.seed, regimes=[("mean_reverting", args.bars)])
    close = bars.close
    w = target_positions(args.bars, args.trades, args.seed)
    print(
        f"{args.bars:,} bars, fee {FEE}, numpy {np.__version__}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs"
    )

    started = time.perf_counter()
    backtest(close[:1000], w[:1000], fee=FEE)  # numba: compiles, or loads its on-disk cache
    first = time.perf_counter() - started
    seconds, result = best_of(lambda: backtest(close, w, fee=FEE), 20)
    report(
        "training.evaluation.backtest", seconds, args.bars, result.trades,
        f"best of 20 (first call of the process {first:.2f} s: numba)",
    )  # fmt: skip
    ours = result.trades

    signals_trades = run_vectorbt_signals(
        close, w, lambda: backtest(close, w, fee=FEE), args.repeat
    )
    theirs = {"vectorbt": run_vectorbt(close, w)}
    n_bt = args.backtesting_bars or args.bars
    if n_bt < args.bars:
        print(f"backtesting.py runs on the first {n_bt:,} bars only (--backtesting-bars)")
        ours_bt = backtest(close[:n_bt], w[:n_bt], fee=FEE).trades
    else:
        ours_bt = ours
    bt_trades = (
        None
        if args.skip_backtesting_py
        else run_backtesting_py(close[:n_bt], w[:n_bt], bars.timestamp[:n_bt])
    )

    print()
    check = [
        ("vectorbt from_signals", signals_trades, ours),
        ("vectorbt from_orders", theirs["vectorbt"], ours),
        ("backtesting.py", bt_trades, ours_bt),
    ]
    for name, count, expected in check:
        if count is None:
            print(f"trade count vs {name}: not compared (library unavailable)")
        elif count == expected:
            print(f"trade count vs {name}: agree ({count:,})")
        else:
            print(f"trade count vs {name}: DISAGREE, ours {expected:,}, {name} {count:,}")


if __name__ == "__main__":
    main()
