"""Seeded synthetic market with regimes, for tests, demos and staging a regime change.

Log returns switch between four regimes (Markov switching, or staged segments given exactly):
- trending: a drift of random sign held for the whole segment, plus weak AR(1) momentum;
- mean_reverting: an Ornstein-Uhlenbeck deviation around a slowly wandering level;
- volatile: high volatility that clusters (log-volatility follows an AR(1), a stochastic-volatility
  cousin of GARCH), no drift, in short bursts;
- quiet: low volatility, range-bound (a slow Ornstein-Uhlenbeck deviation).
In every regime volatility also clusters over days to weeks (a slow AR(1) of log-volatility, mean
multiplier 1), so a position sized on realised volatility has something to react to.
Innovations are Student-t (5 degrees of freedom) for fat tails. Magnitudes are set for 1h bars and
scaled by sqrt(bar length / 1h), so every timeframe has the same per-bar Sharpe ratios.

The edge is set so that skill looks like skill, not like a money machine: the trend's drift is 0.07
to 0.17 of the bar's sigma (it takes about a thousand bars to stand out of the noise). On the
demo's market (seed 7, 20,000 bars, the last quarter out of sample, a 0.0005 fee, positions sized
to 10 % a year) the tree families reach Sharpe ratios of 2.5 to 4.4 and clear the default gates,
while random, flat and buy-and-hold positions do not; other seeds put more or less of a
predictable regime in the evaluation window and move the figure (the same models measured 5 to 7
on seed 1). Volatility (about 0.3 % per hour, 28 % a year) is that of a calmer asset than
bitcoin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.signal import lfilter

from training.data.dataset import Bars

REGIMES: tuple[str, ...] = ("trending", "mean_reverting", "volatile", "quiet")

TIMEFRAME_SECONDS: dict[str, int] = {
    "1m": 60,
    "5m": 300,
    "15m": 900,
    "1h": 3_600,
    "4h": 14_400,
    "1d": 86_400,
}

# Markov switching, in REGIMES order: how likely each regime is to come next, and its mean segment
# length relative to mean_regime_length (volatility bursts are short-lived).
_REGIME_WEIGHTS = np.array([0.35, 0.35, 0.20, 0.10])
_REGIME_DURATION = np.array([1.0, 1.0, 0.25, 1.0])
_T_DOF = 5.0

# Per-bar magnitudes of 1h bars (log-return units).
_TREND_SIGMA = 0.003
_TREND_DRIFT = (0.07, 0.17)  # |drift| / sigma, drawn per segment
_TREND_AR = 0.05
_MR_SIGMA = 0.0025
_MR_KAPPA = 0.15  # pull back to the level per bar: half-life about 4 bars
_MR_LEVEL_SIGMA = 0.0001
_VOLATILE_SIGMA = 0.005
_VOLATILE_PERSISTENCE = 0.97
_VOLATILE_VOL_OF_VOL = 0.35
_QUIET_SIGMA = 0.0015
_QUIET_KAPPA = 0.05
# Volatility clusters in every regime: an AR(1) of log-volatility (half-life about 140 bars)
# multiplies each bar's sigma.
_CLUSTER_PERSISTENCE = 0.995
_CLUSTER_VOL_OF_VOL = 0.25
_RANGE_FACTOR = 0.6  # how far the intrabar extremes reach beyond open/close, in bar sigmas
_VOLUME_PER_HOUR = 1_000.0


def timeframe_seconds(timeframe: str) -> int:
    """Length of one bar of `timeframe` in seconds."""
    try:
        return TIMEFRAME_SECONDS[timeframe]
    except KeyError:
        raise ValueError(
            f"unknown timeframe {timeframe!r}; known: {', '.join(TIMEFRAME_SECONDS)}"
        ) from None


def generate_bars(
    n_bars: int,
    *,
    seed: int,
    timeframe: str = "1h",
    start: str = "2024-01-01T00:00:00",
    start_price: float = 30_000.0,
    regimes: Sequence[tuple[str, int]] | None = None,
    mean_regime_length: float = 500,
) -> tuple[Bars, np.ndarray]:
    """OHLCV bars and each bar's regime code (an index into REGIMES, int8).

    The same arguments always give the same bars. `regimes`, a list of (regime name, bar count)
    segments adding up to `n_bars`, stages the regimes exactly (to stage a regime change); without
    it, segments have geometric lengths with mean `mean_regime_length` and each next regime is drawn
    from the others by their long-run weights.
    """
    if isinstance(n_bars, bool) or not isinstance(n_bars, int | np.integer) or n_bars < 1:
        raise ValueError(f"n_bars must be a positive integer, got {n_bars!r}")
    bar_seconds = timeframe_seconds(timeframe)
    if not (math.isfinite(start_price) and start_price > 0):
        raise ValueError(f"start_price must be positive, got {start_price!r}")
    rng = np.random.default_rng(seed)
    if regimes is None:
        if not (math.isfinite(mean_regime_length) and mean_regime_length >= 1):
            raise ValueError(f"mean_regime_length must be >= 1, got {mean_regime_length!r}")
        segments = _markov_segments(int(n_bars), float(mean_regime_length), rng)
    else:
        segments = _staged_segments(regimes, int(n_bars))

    scale = math.sqrt(bar_seconds / 3_600)
    log_return = np.empty(n_bars)
    sigma = np.empty(n_bars)
    codes = np.empty(n_bars, dtype=np.int8)
    at = 0
    for code, length in segments:
        window = slice(at, at + length)
        log_return[window], sigma[window] = _SEGMENT_GENERATORS[code](length, rng)
        codes[window] = code
        at += length
    clusters = _clusters(int(n_bars), rng) * scale
    log_return *= clusters
    sigma *= clusters

    close = start_price * np.exp(np.cumsum(log_return))
    open_ = np.empty(n_bars)
    open_[0] = start_price
    open_[1:] = close[:-1]
    reach_up = np.abs(rng.standard_normal(n_bars)) * _RANGE_FACTOR * sigma
    reach_down = np.abs(rng.standard_normal(n_bars)) * _RANGE_FACTOR * sigma
    high = np.maximum(open_, close) * np.exp(reach_up)
    low = np.minimum(open_, close) * np.exp(-reach_down)
    # Volume rises with the regime's volatility and with the size of the bar's move.
    surprise = np.abs(log_return) / sigma
    volume = (
        _VOLUME_PER_HOUR
        * (bar_seconds / 3_600)
        * (sigma / (_TREND_SIGMA * scale))
        * (0.5 + 0.5 * surprise)
        * np.exp(0.3 * rng.standard_normal(n_bars))
    )
    timestamp = np.datetime64(start, "s") + np.arange(n_bars) * np.timedelta64(bar_seconds, "s")
    bars = Bars(timestamp=timestamp, open=open_, high=high, low=low, close=close, volume=volume)
    return bars, codes


def _innovations(n: int, rng: np.random.Generator) -> np.ndarray:
    """Student-t noise scaled to unit variance."""
    return rng.standard_t(_T_DOF, n) * math.sqrt((_T_DOF - 2.0) / _T_DOF)


def _ar1(shocks: np.ndarray, coefficient: float) -> np.ndarray:
    """x[t] = coefficient * x[t-1] + shocks[t], x[-1] = 0, without a Python loop."""
    return lfilter([1.0], [1.0, -coefficient], shocks)


def _trending(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    drift = rng.choice([-1.0, 1.0]) * rng.uniform(*_TREND_DRIFT) * _TREND_SIGMA
    noise = _ar1(_TREND_SIGMA * math.sqrt(1 - _TREND_AR**2) * _innovations(n, rng), _TREND_AR)
    return drift + noise, np.full(n, _TREND_SIGMA)


def _mean_reverting(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    deviation = _ar1(_MR_SIGMA * _innovations(n, rng), 1.0 - _MR_KAPPA)
    level = np.cumsum(_MR_LEVEL_SIGMA * rng.standard_normal(n))
    return np.diff(level + deviation, prepend=0.0), np.full(n, _MR_SIGMA)


def _volatile(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    persistence = _VOLATILE_PERSISTENCE
    shocks = _VOLATILE_VOL_OF_VOL * math.sqrt(1 - persistence**2) * rng.standard_normal(n)
    sigma = _VOLATILE_SIGMA * np.exp(_ar1(shocks, persistence) - _VOLATILE_VOL_OF_VOL**2 / 2)
    return sigma * _innovations(n, rng), sigma


def _quiet(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # Range-bound rather than white noise: with no edge at all a model would only pay fees here.
    deviation = _ar1(_QUIET_SIGMA * _innovations(n, rng), 1.0 - _QUIET_KAPPA)
    return np.diff(deviation, prepend=0.0), np.full(n, _QUIET_SIGMA)


def _clusters(n: int, rng: np.random.Generator) -> np.ndarray:
    """A volatility multiplier with mean 1 whose logarithm is a slow AR(1): calm and stormy weeks
    in every regime, the clustering a volatility-targeted position reacts to."""
    persistence, spread = _CLUSTER_PERSISTENCE, _CLUSTER_VOL_OF_VOL
    shocks = spread * math.sqrt(1 - persistence**2) * rng.standard_normal(n)
    start = spread * rng.standard_normal()  # start in the stationary distribution
    log_multiplier = _ar1(shocks, persistence) + start * persistence ** np.arange(1, n + 1)
    return np.exp(log_multiplier - spread**2 / 2)


_SEGMENT_GENERATORS = (_trending, _mean_reverting, _volatile, _quiet)


def _markov_segments(
    n_bars: int, mean_length: float, rng: np.random.Generator
) -> list[tuple[int, int]]:
    segments: list[tuple[int, int]] = []
    code = int(rng.choice(len(REGIMES), p=_REGIME_WEIGHTS))
    remaining = n_bars
    while remaining > 0:
        mean = max(mean_length * _REGIME_DURATION[code], 1.0)
        length = min(int(rng.geometric(1.0 / mean)), remaining)
        segments.append((code, length))
        remaining -= length
        others = _REGIME_WEIGHTS.copy()
        others[code] = 0.0
        code = int(rng.choice(len(REGIMES), p=others / others.sum()))
    return segments


def _staged_segments(regimes: Sequence[tuple[str, int]], n_bars: int) -> list[tuple[int, int]]:
    segments = []
    for name, length in regimes:
        if name not in REGIMES:
            raise ValueError(f"unknown regime {name!r}; known: {', '.join(REGIMES)}")
        if isinstance(length, bool) or not isinstance(length, int | np.integer) or length < 1:
            raise ValueError(f"regime {name!r} needs a positive bar count, got {length!r}")
        segments.append((REGIMES.index(name), int(length)))
    total = sum(length for _, length in segments)
    if total != n_bars:
        raise ValueError(f"staged regimes cover {total} bars, n_bars is {n_bars}")
    return segments
