"""The six model families behind the Trainer interface, each fitted on tiny budgets.

Every family must: fit only on leak-free training rows, give finite positions in [-1, 1] that use
no later bar, repeat itself for a seed, survive a dumps/loads round trip, and refuse bad params and
foreign or corrupt artifacts. The deep and RL families are marked slow (seconds each, not minutes).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from training.data.dataset import Bars, Dataset
from training.data.features import build_dataset
from training.data.split import walk_forward
from training.data.synthetic import generate_bars
from training.trainers import Trainer, TrainerError, trainer_class
from training.trainers._common import banded_positions
from training.trainers.rl import TradingEnv

TINY: dict[str, dict] = {
    "xgboost": {"n_estimators": 40},
    "lightgbm": {"n_estimators": 40},
    "nhits": {"max_steps": 5, "input_size": 16, "mlp_width": 16, "windows_batch_size": 32},
    "patchtst": {
        "max_steps": 5,
        "input_size": 32,
        "patch_len": 8,
        "stride": 8,
        "hidden_size": 16,
        "n_heads": 2,
        "encoder_layers": 1,
        "windows_batch_size": 32,
    },
    "rl_v3": {"total_timesteps": 256, "n_steps": 128, "batch_size": 64, "episode_length": 64},
    "rl_v2": {
        "total_timesteps": 256,
        "learning_starts": 64,
        "batch_size": 32,
        "episode_length": 64,
    },
}
TREES = ["xgboost", "lightgbm"]
SLOW = ["nhits", "patchtst", "rl_v3", "rl_v2"]
FAMILIES = [*TREES, *(pytest.param(f, marks=pytest.mark.slow) for f in SLOW)]

N_BARS = 1_500
TRAIN = slice(0, 1_000)  # the first 199 rows are the default features' warm-up
WINDOW = slice(1_010, N_BARS)


def _perturbed(bars: Bars, after: int, seed: int) -> Bars:
    """The same bars up to `after`, different prices from `after + 1` on."""
    factor = np.ones(len(bars))
    rng = np.random.default_rng(seed)
    factor[after + 1 :] = np.exp(np.cumsum(rng.normal(0.0, 0.01, len(bars) - after - 1)))
    return Bars(
        timestamp=bars.timestamp,
        open=bars.open * factor,
        high=bars.high * factor,
        low=bars.low * factor,
        close=bars.close * factor,
        volume=bars.volume,
    )


@pytest.fixture(scope="module")
def data() -> Dataset:
    bars, _ = generate_bars(N_BARS, seed=7)
    return build_dataset(bars)


@pytest.fixture(scope="module")
def fitted(data: Dataset) -> Callable[[str], tuple[Trainer, dict[str, float]]]:
    """Each family fitted once on `data` (seed 3), shared by the tests of this module."""
    cache: dict[str, tuple[Trainer, dict[str, float]]] = {}

    def get(family: str) -> tuple[Trainer, dict[str, float]]:
        if family not in cache:
            trainer = trainer_class(family)(TINY[family], seed=3)
            cache[family] = trainer, trainer.fit(data, TRAIN)
        return cache[family]

    return get


@pytest.mark.parametrize("family", FAMILIES)
def test_fit_reports_metrics_and_positions_are_bounded(family, data, fitted) -> None:
    trainer, metrics = fitted(family)
    assert metrics["n_train_rows"] > 500
    assert metrics["fit_seconds"] > 0
    assert all(isinstance(v, float) and np.isfinite(v) for v in metrics.values())

    positions = trainer.positions(data, WINDOW)
    assert positions.shape == (WINDOW.stop - WINDOW.start,)
    assert np.isfinite(positions).all()
    assert (np.abs(positions) <= 1.0).all()

    n_warm = int(np.argmax(np.isfinite(data.features).all(axis=1)))
    assert n_warm > 100
    warm = trainer.positions(data, slice(0, 300))
    assert (warm[:n_warm] == 0).all(), "rows whose features are warming up must be flat"


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_positions_and_fit_reads_only_the_train_slice(family, data, fitted) -> None:
    """A second fit with the same seed, on bars that differ only after the train slice, repeats
    the first: fitting is deterministic and no label reaches past train.stop."""
    trainer, _ = fitted(family)
    other = build_dataset(_perturbed(data.bars, TRAIN.stop - 1, seed=1))
    again = trainer_class(family)(TINY[family], seed=3)
    again.fit(other, TRAIN)
    np.testing.assert_array_equal(again.positions(data, WINDOW), trainer.positions(data, WINDOW))


@pytest.mark.parametrize("family", TREES)
def test_early_stopping_and_calibration_read_no_test_bar(family, data) -> None:
    """The trees choose their tree count and calibrator on the split's validation window: bars
    after it (the test window) changed, the fitted artifact is the same byte for byte. The same
    change inside the validation window does change it, so the check can fail."""
    split = walk_forward(len(data), horizon=data.horizon, warmup=data.spec["lookback"])
    params = {"n_estimators": 400, "learning_rate": 0.3, "early_stopping_rounds": 5}

    def fit(bars: Bars) -> tuple[Trainer, dict[str, float]]:
        trainer = trainer_class(family)(params, seed=3)
        return trainer, trainer.fit(build_dataset(bars), split.train, split.validation)

    trainer, metrics = fit(data.bars)
    changed, changed_metrics = fit(_perturbed(data.bars, split.validation.stop - 1, seed=5))
    touched, touched_metrics = fit(_perturbed(data.bars, split.validation.stop - 60, seed=5))

    assert metrics["n_trees"] < params["n_estimators"], "early stopping must have stopped"
    assert metrics["n_valid_rows"] > 0
    assert changed_metrics["n_trees"] == metrics["n_trees"]
    assert changed.calibrator == trainer.calibrator
    assert changed.dumps() == trainer.dumps()
    assert touched.dumps() != trainer.dumps()
    assert touched_metrics["valid_logloss"] != metrics["valid_logloss"]


def test_a_validation_window_overlapping_train_is_refused(data) -> None:
    with pytest.raises(TrainerError, match="overlaps the train window"):
        trainer_class("xgboost")(TINY["xgboost"]).fit(data, TRAIN, slice(900, 1_200))


@pytest.mark.parametrize("family", FAMILIES)
def test_positions_do_not_look_ahead(family, data, fitted) -> None:
    trainer, _ = fitted(family)
    cut = 1_250
    other = build_dataset(_perturbed(data.bars, cut, seed=2))
    before = trainer.positions(data, WINDOW)
    after = trainer.positions(other, WINDOW)
    upto = cut - WINDOW.start + 1
    np.testing.assert_array_equal(after[:upto], before[:upto])
    assert not np.array_equal(other.features[cut + 1 :], data.features[cut + 1 :])


@pytest.mark.parametrize("family", FAMILIES)
def test_dumps_loads_round_trip_and_self_description(family, data, fitted) -> None:
    trainer, _ = fitted(family)
    blob = trainer.dumps()
    loaded = trainer_class(family).loads(blob)
    np.testing.assert_array_equal(loaded.positions(data, WINDOW), trainer.positions(data, WINDOW))
    assert loaded.params == trainer.params and loaded.seed == 3

    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        meta = json.loads(archive.read("meta.json"))
    assert meta["model_type"] == family
    assert meta["feature_names"] == data.feature_names
    assert meta["horizon"] == data.horizon
    assert meta["seed"] == 3
    assert meta["params"] == trainer.params
    assert {"python", "numpy"} <= set(meta["libraries"])


@pytest.mark.parametrize("family", FAMILIES)
def test_loads_refuses_other_families_and_corrupt_bytes(family, fitted) -> None:
    trainer, _ = fitted(family)
    foreign = fitted("lightgbm" if family == "xgboost" else "xgboost")[0].dumps()
    with pytest.raises(TrainerError, match=f"model, not '{family}'"):
        trainer_class(family).loads(foreign)

    blob = bytearray(trainer.dumps())
    middle = len(blob) // 2
    blob[middle : middle + 16] = bytes(16)
    for bad in (bytes(blob), b"", b"not an artifact", blob[: len(blob) // 3]):
        with pytest.raises(TrainerError):
            trainer_class(family).loads(bytes(bad))


@pytest.mark.parametrize("family", [*TREES, *SLOW])
def test_bad_params_are_refused_with_a_clear_error(family) -> None:
    cls = trainer_class(family)
    with pytest.raises(TrainerError, match="unknown"):
        cls({"no_such_param": 1})
    with pytest.raises(TrainerError, match="'learning_rate' must be >="):
        cls({"learning_rate": -1.0})
    with pytest.raises(TrainerError, match="must be int"):
        cls({next(k for k, v in cls.default_params.items() if type(v) is int): 2.5})
    with pytest.raises(TrainerError, match="must be int"):
        cls({next(k for k, v in cls.default_params.items() if type(v) is int): True})
    with pytest.raises(TrainerError, match="seed"):
        cls({}, seed=-1)


def test_family_specific_param_checks() -> None:
    with pytest.raises(TrainerError, match="one of"):
        trainer_class("xgboost")({"calibration": "magic"})
    with pytest.raises(TrainerError, match="validation_fraction > 0"):
        trainer_class("lightgbm")({"validation_fraction": 0.0})
    with pytest.raises(TrainerError, match="multiple of 'n_heads'"):
        trainer_class("patchtst")({"hidden_size": 30, "n_heads": 4})
    with pytest.raises(TrainerError, match="patch_len"):
        trainer_class("patchtst")({"input_size": 16, "patch_len": 32})


def test_trainer_refuses_bad_windows_unfitted_use_and_other_features(data, fitted) -> None:
    trainer, _ = fitted("xgboost")
    with pytest.raises(TrainerError, match="contiguous"):
        trainer.positions(data, slice(1_010, 1_500, 2))
    with pytest.raises(TrainerError, match="no rows"):
        trainer.positions(data, slice(1_600, 1_700))
    with pytest.raises(TrainerError, match="not fitted"):
        trainer_class("xgboost")().positions(data, WINDOW)
    with pytest.raises(TrainerError, match="not fitted"):
        trainer_class("xgboost")().dumps()
    fewer = build_dataset(data.bars, {"return_lags": [1, 2]})
    with pytest.raises(TrainerError, match="fitted on features"):
        trainer.positions(fewer, WINDOW)
    with pytest.raises(TrainerError, match="training rows"):
        trainer_class("xgboost")().fit(data, slice(0, 230))


def _ar1_dataset(n: int, phi: float, seed: int) -> Dataset:
    """Log returns with AR(1) momentum `phi`: the sign of the last return predicts the next."""
    rng = np.random.default_rng(seed)
    returns = np.zeros(n)
    shocks = rng.normal(0.0, 0.01, n)
    for t in range(1, n):
        returns[t] = phi * returns[t - 1] + shocks[t]
    close = 100.0 * np.exp(np.cumsum(returns))
    bars = Bars(
        timestamp=np.arange(n).astype("datetime64[h]").astype("datetime64[s]"),
        open=close,
        high=close * 1.001,
        low=close * 0.999,
        close=close,
        volume=np.full(n, 1_000.0),
    )
    return build_dataset(bars, {"return_lags": [1, 2, 4], "ma_windows": [10]}, horizon=1)


@pytest.mark.parametrize("family", TREES)
def test_tree_models_learn_a_predictable_series(family) -> None:
    data = _ar1_dataset(5_000, phi=0.3, seed=4)
    trainer = trainer_class(family)({"n_estimators": 100}, seed=0)
    trainer.fit(data, slice(0, 3_500))
    window = slice(3_510, 4_999)
    positions = trainer.positions(data, window)
    close = data.bars.close
    next_return = close[window.start + 1 : window.stop + 1] / close[window] - 1.0
    assert np.corrcoef(positions, next_return)[0, 1] > 0.1


def test_banded_positions_hold_or_flatten_inside_the_band() -> None:
    signal = np.array([np.nan, 0.01, 0.3, 0.01, -0.05, -0.5, np.nan, 0.01, 0.1])
    held = banded_positions(signal, band=0.05, scale=0.2, hold=True)
    flat = banded_positions(signal, band=0.05, scale=0.2, hold=False)
    np.testing.assert_allclose(held, [0, 0, 1, 1, -0.25, -1, 0, 0, 0.5])
    np.testing.assert_allclose(flat, [0, 0, 1, 0, -0.25, -1, 0, 0, 0.5])


def _env() -> TradingEnv:
    rng = np.random.default_rng(0)
    return TradingEnv(
        rng.normal(size=(50, 3)), rng.normal(0, 0.01, 50), fee=0.001, episode_length=20
    )


def test_trading_env_passes_the_gymnasium_checker() -> None:
    check_env(_env(), skip_render_check=True)


def test_trading_env_reward_is_the_strategy_return() -> None:
    returns = np.array([0.01, -0.02, 0.03, 0.005])
    env = TradingEnv(np.zeros((4, 2)), returns, fee=0.001, episode_length=4)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3,) and obs[-1] == 0.0
    rewards, done = [], False
    for action in (1, 1, 2, 0):  # long, long, short, flat
        obs, reward, terminated, truncated, _ = env.step(action)
        rewards.append(reward)
        done = terminated or truncated
    np.testing.assert_allclose(rewards, [0.01 - 0.001, -0.02, -0.03 - 0.002, -0.001])
    assert done and obs[-1] == 0.0


@pytest.mark.slow
def test_deep_models_write_nothing_into_the_working_directory(data, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    trainer = trainer_class("nhits")(TINY["nhits"], seed=0)
    trainer.fit(data, TRAIN)
    trainer.positions(data, WINDOW)
    assert list(tmp_path.iterdir()) == []
