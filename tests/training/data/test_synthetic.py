"""The synthetic market: reproducible, valid OHLCV, regimes where asked and with their character."""

from __future__ import annotations

import numpy as np
import pytest

from training.data.prepare import prepare_training
from training.data.synthetic import REGIMES, generate_bars, timeframe_seconds
from training.evaluation.backtest import backtest
from training.management.commands.generate_market_data import symbol_seed
from training.promotion.gates import GateThresholds, apply_gates
from training.trainers import trainer_class


def _log_returns(close: np.ndarray) -> np.ndarray:
    return np.log(close[1:] / close[:-1])


def _autocorrelation(x: np.ndarray) -> float:
    return float(np.corrcoef(x[1:], x[:-1])[0, 1])


def test_same_seed_same_bars_other_seed_other_bars() -> None:
    a, regimes_a = generate_bars(3_000, seed=7)
    b, regimes_b = generate_bars(3_000, seed=7)
    c, _ = generate_bars(3_000, seed=8)

    for name in ("timestamp", "open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(regimes_a, regimes_b)
    assert not np.array_equal(a.close, c.close)


def test_ohlcv_is_valid() -> None:
    bars, _ = generate_bars(20_000, seed=1)

    assert bars.open[0] == 30_000.0
    np.testing.assert_array_equal(bars.open[1:], bars.close[:-1])
    assert (bars.high >= np.maximum(bars.open, bars.close)).all()
    assert (bars.low <= np.minimum(bars.open, bars.close)).all()
    assert (bars.low > 0).all() and (bars.volume > 0).all()
    assert np.isfinite(np.column_stack([bars.high, bars.low, bars.volume])).all()


def test_volume_rises_with_volatility() -> None:
    bars, _ = generate_bars(20_000, seed=2)
    move = np.abs(_log_returns(bars.close))

    assert np.corrcoef(move, bars.volume[1:])[0, 1] > 0.3


@pytest.mark.parametrize("timeframe", ["1m", "5m", "15m", "1h", "4h", "1d"])
def test_timestamps_step_by_the_timeframe(timeframe: str) -> None:
    bars, _ = generate_bars(10, seed=0, timeframe=timeframe, start="2025-03-01T00:00:00")

    assert bars.timestamp[0] == np.datetime64("2025-03-01T00:00:00", "s")
    steps = np.diff(bars.timestamp).astype("int64")
    assert (steps == timeframe_seconds(timeframe)).all()


def test_staged_regimes_appear_exactly_where_asked() -> None:
    stages = [("trending", 1_500), ("mean_reverting", 1_000), ("volatile", 300), ("quiet", 700)]
    _, regimes = generate_bars(3_500, seed=4, regimes=stages)

    expected = np.concatenate([np.full(n, REGIMES.index(name)) for name, n in stages])
    np.testing.assert_array_equal(regimes, expected)


def test_each_regime_has_its_character() -> None:
    n = 40_000
    trending, _ = generate_bars(n, seed=5, regimes=[("trending", n)])
    reverting, _ = generate_bars(n, seed=5, regimes=[("mean_reverting", n)])
    volatile, _ = generate_bars(n, seed=5, regimes=[("volatile", n)])
    quiet, _ = generate_bars(n, seed=5, regimes=[("quiet", n)])

    assert _autocorrelation(_log_returns(trending.close)) > 0.02
    assert _autocorrelation(_log_returns(reverting.close)) < -0.03
    vol = {name: _log_returns(b.close).std() for name, b in
           [("trending", trending), ("volatile", volatile), ("quiet", quiet)]}  # fmt: skip
    assert vol["volatile"] > 1.5 * vol["trending"] > 2 * vol["quiet"]
    # volatility clusters: big moves follow big moves
    assert _autocorrelation(np.abs(_log_returns(volatile.close))) > 0.05


def test_trending_segments_drift_one_way() -> None:
    stages = [("trending", 1_000)] * 20
    bars, _ = generate_bars(20_000, seed=9, regimes=stages)
    r = np.log(bars.close / bars.open).reshape(20, 1_000)  # open is the previous close

    # each segment's drift stands out of its noise: t-statistic of the mean return (a drift of
    # 0.07 to 0.17 sigma a bar needs about a thousand bars to show)
    t_stats = np.abs(r.mean(axis=1)) / (r.std(axis=1) / np.sqrt(1_000))
    assert np.median(t_stats) > 2.5
    # and one way: the two halves of a segment drift the same way
    halves = np.sign(r.reshape(20, 2, 500).mean(axis=2))
    assert np.mean(halves[:, 0] == halves[:, 1]) >= 0.8


def test_volatility_clusters_in_every_regime() -> None:
    n = 20_000
    for regime in ("trending", "mean_reverting", "quiet"):
        bars, _ = generate_bars(n, seed=6, regimes=[(regime, n)])
        r = _log_returns(bars.close)
        daily = r[: len(r) // 24 * 24].reshape(-1, 24).std(axis=1)
        # calm and stormy days: a day's volatility says something about the next day's (about
        # 0.06 for independent Student-t returns)
        assert _autocorrelation(daily) > 0.2, regime


def test_markov_switching_visits_every_regime() -> None:
    _, regimes = generate_bars(50_000, seed=0, mean_regime_length=300)

    assert set(np.unique(regimes)) == set(range(len(REGIMES)))
    segments = 1 + np.count_nonzero(np.diff(regimes))
    assert 50 < segments < 500


def test_longer_timeframes_move_more_per_bar() -> None:
    hourly, _ = generate_bars(5_000, seed=3, regimes=[("quiet", 5_000)])
    daily, _ = generate_bars(5_000, seed=3, regimes=[("quiet", 5_000)], timeframe="1d")
    ratio = _log_returns(daily.close).std() / _log_returns(hourly.close).std()

    assert ratio == pytest.approx(np.sqrt(24), rel=0.01)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_bars": 0}, "n_bars"),
        ({"n_bars": 10, "timeframe": "2h"}, "unknown timeframe '2h'"),
        ({"n_bars": 10, "start_price": -1.0}, "start_price"),
        ({"n_bars": 10, "mean_regime_length": 0}, "mean_regime_length"),
        ({"n_bars": 10, "regimes": [("sideways", 10)]}, "unknown regime 'sideways'"),
        ({"n_bars": 10, "regimes": [("quiet", 0), ("trending", 10)]}, "positive bar count"),
        ({"n_bars": 10, "regimes": [("quiet", 4)]}, "cover 4 bars, n_bars is 10"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_bars(seed=0, **kwargs)


@pytest.mark.slow
def test_the_demo_market_gives_believable_sharpe_and_the_gates_separate() -> None:
    """On the demo's default market (seed 7, 20,000 hourly bars, its last quarter out of sample),
    the tree families with their default params and volatility-targeted sizing reach a Sharpe
    ratio a real strategy could (roughly 1 to 4, not 7 to 12) and clear the default gates, while
    random, flat and buy-and-hold positions clear none of them."""
    bars, _ = generate_bars(20_000, seed=symbol_seed(7, "BTCUSDT"))
    dataset, split, params, _ = prepare_training(bars, {}, eval_fraction=0.25)
    close = bars.close[split.evaluate]
    n = len(close)

    def verdict(positions: np.ndarray) -> tuple[float, bool]:
        result = backtest(close, positions, fee=0.0005, periods_per_year=8_760)
        return result.sharpe, apply_gates(result.as_dict(), GateThresholds())[1]

    for family in ("xgboost", "lightgbm"):
        trainer = trainer_class(family)(params, seed=0)
        trainer.fit(dataset, split.train, split.validation)  # as the pipeline fits
        sharpe, passed = verdict(trainer.positions(dataset, split.evaluate))
        assert 1.0 <= sharpe <= 4.5 and passed, (family, sharpe)

    side = np.random.default_rng(0).choice([-1.0, 1.0], n)
    for name, positions in (("random", side), ("flat", np.zeros(n)), ("hold", np.ones(n))):
        assert not verdict(positions)[1], name
