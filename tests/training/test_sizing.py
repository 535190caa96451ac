"""Volatility-targeted sizing: causal, capped, deterministic, the same for every window and every
caller, and carried by the artifact."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from training.data.dataset import Bars
from training.data.features import build_dataset
from training.data.synthetic import generate_bars
from training.serving.inference import PATH_BARS, load_artifact
from training.trainers import trainer_class
from training.trainers._common import bars_per_year, deterministic_zip, vol_targeted

HOURLY = 8_760.0


def _close(n: int, *, sigma: float = 0.01, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(rng.normal(0.0, sigma, n)))


def _sized(signal, close, window, **overrides):
    params = {"target_vol": 0.10, "vol_lookback": 24, "max_leverage": 1.0}
    return vol_targeted(signal, close, window, bars_per_year=HOURLY, **{**params, **overrides})


def test_position_is_signal_times_target_over_realised_volatility() -> None:
    close = _close(100)
    signal = np.linspace(-1.0, 1.0, 50)
    sized = _sized(signal, close, range(50, 100), vol_lookback=10)

    # Row 20 of the window is bar 70: the 10 log returns ending at close[70].
    realised = np.std(np.diff(np.log(close[60:71])), ddof=1) * np.sqrt(HOURLY)
    assert sized[20] == pytest.approx(signal[20] * 0.10 / realised, rel=1e-12)
    assert np.abs(sized).max() < 1.0  # 1 % a bar is 94 % a year: sizing scales down


def test_sizing_is_causal_bars_after_t_change_nothing_up_to_t() -> None:
    close = _close(400, seed=1)
    later = close.copy()
    later[251:] *= np.exp(np.cumsum(np.random.default_rng(2).normal(0, 0.05, 149)))
    signal = np.ones(300)
    window = range(100, 400)

    before, after = _sized(signal, close, window), _sized(signal, later, window)
    np.testing.assert_array_equal(before[: 251 - 100], after[: 251 - 100])
    assert not np.array_equal(before[251 - 100 :], after[251 - 100 :])


def test_sizing_is_capped_and_flat_without_enough_history() -> None:
    close = _close(200, sigma=0.0001)  # 0.9 % a year: target / realised is about 11
    sized = _sized(np.full(200, -1.0), close, range(0, 200), max_leverage=0.5)
    assert (sized[:24] == 0).all(), "rows without vol_lookback returns before them are flat"
    np.testing.assert_array_equal(sized[24:], -0.5)

    constant = np.full(60, 50.0)  # zero realised volatility: the cap
    np.testing.assert_array_equal(_sized(np.ones(30), constant, range(30, 60)), 1.0)


def test_sizing_is_the_same_for_every_window_over_the_same_bars() -> None:
    close = _close(3_000, seed=3)
    signal = np.random.default_rng(4).uniform(-1, 1, 3_000)
    whole = _sized(signal, close, range(0, 3_000))
    for start, stop in ((2_744, 3_000), (100, 101), (1_000, 2_000)):
        part = _sized(signal[start:stop], close, range(start, stop))
        np.testing.assert_array_equal(part, whole[start:stop])  # bit for bit
    np.testing.assert_array_equal(_sized(signal, close, range(0, 3_000)), whole)


def test_target_vol_zero_trades_the_raw_signal() -> None:
    signal = np.array([0.0, 0.5, -1.0, 0.25])
    sized = _sized(signal, _close(4), range(0, 4), target_vol=0.0)
    np.testing.assert_array_equal(sized, signal)


def test_sized_strategy_runs_near_its_target_volatility() -> None:
    close = _close(20_000, sigma=0.004, seed=5)  # 37 % a year
    sized = _sized(np.ones(20_000), close, range(0, 20_000), vol_lookback=48)
    strategy = sized[:-1] * np.diff(close) / close[:-1]
    assert np.std(strategy[48:]) * np.sqrt(HOURLY) == pytest.approx(0.10, rel=0.05)


def test_bars_per_year_is_measured_from_the_timestamps() -> None:
    hourly = np.datetime64("2024-01-01T00:00:00") + np.arange(2_000) * np.timedelta64(1, "h")
    daily = np.datetime64("2024-01-01T00:00:00") + np.arange(10) * np.timedelta64(1, "D")
    assert bars_per_year(hourly) == 8_760
    assert bars_per_year(daily) == pytest.approx(365)  # too short to measure: from the spacing


@pytest.fixture(scope="module")
def market() -> Bars:
    return generate_bars(1_800, seed=7)[0]


@pytest.fixture(scope="module")
def fitted(market):
    trainer = trainer_class("xgboost")({"n_estimators": 40}, seed=0)
    trainer.fit(build_dataset(market), slice(0, 1_200))
    return trainer


def test_every_caller_gets_sized_positions_and_an_artifact_repeats_them(market, fitted) -> None:
    data = build_dataset(market)
    window = slice(1_210, 1_800)
    sized = fitted.positions(data, window)
    raw = fitted._positions(data.unlabelled(), window)
    assert fitted.bars_per_year == 8_760
    assert np.count_nonzero(sized) > 0
    assert (np.abs(sized) <= np.abs(raw) + 1e-12).all()  # 28 % a year is above the 10 % target
    assert not np.allclose(sized, raw)

    loaded = load_artifact(fitted.dumps())
    np.testing.assert_array_equal(loaded.positions_window(market, window), sized)
    path = slice(len(market) - PATH_BARS, len(market))
    assert loaded.latest_position(market) == fitted.positions(data, path)[-1]
    assert loaded.warmup_bars >= fitted.params["vol_lookback"]


def test_an_artifact_from_before_sizing_keeps_trading_its_raw_signal(market, fitted) -> None:
    with zipfile.ZipFile(io.BytesIO(fitted.dumps())) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    meta = json.loads(entries["meta.json"])
    del meta["bars_per_year"]
    for name in ("target_vol", "vol_lookback", "max_leverage"):
        del meta["params"][name]
    entries["meta.json"] = json.dumps(meta).encode()

    old = trainer_class("xgboost").loads(deterministic_zip(entries))
    data, window = build_dataset(market), slice(1_210, 1_800)
    np.testing.assert_array_equal(
        old.positions(data, window), fitted._positions(data.unlabelled(), window)
    )
