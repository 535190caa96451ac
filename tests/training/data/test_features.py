"""Features see only the past, the label is the forward log return, bad specs are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.data.dataset import Bars
from training.data.features import DEFAULT_FEATURE_SPEC, build_dataset, validate_feature_spec
from training.data.synthetic import generate_bars


@pytest.fixture(scope="module")
def bars() -> Bars:
    return generate_bars(1_000, seed=5)[0]


def _with_future_changed(bars: Bars, t: int, seed: int) -> Bars:
    """The same bars up to t; every later bar replaced by an unrelated market."""
    rng = np.random.default_rng(seed)
    n = len(bars)
    scale = np.ones(n)
    scale[t + 1 :] = np.exp(np.cumsum(rng.normal(0, 0.05, n - t - 1)))
    volume = bars.volume.copy()
    volume[t + 1 :] = rng.uniform(1, 1e6, n - t - 1)
    return Bars(
        timestamp=bars.timestamp,
        open=bars.open * scale,
        high=bars.high * scale,
        low=bars.low * scale,
        close=bars.close * scale,
        volume=volume,
    )


@pytest.mark.parametrize("t", [250, 600, 998])
def test_changing_the_future_leaves_features_up_to_t_unchanged(bars: Bars, t: int) -> None:
    before = build_dataset(bars)
    after = build_dataset(_with_future_changed(bars, t, seed=t))

    np.testing.assert_array_equal(after.features[: t + 1], before.features[: t + 1])
    assert not np.allclose(after.features[t + 1 :], before.features[t + 1 :], equal_nan=True)


def test_features_on_a_prefix_equal_features_on_the_whole(bars: Bars) -> None:
    whole = build_dataset(bars)
    prefix = build_dataset(bars.slice(slice(0, 500)))

    np.testing.assert_allclose(prefix.features, whole.features[:500], rtol=1e-12, atol=1e-15)


def test_label_is_the_forward_log_return(bars: Bars) -> None:
    data = build_dataset(bars, horizon=3)

    expected = np.log(bars.close[3:] / bars.close[:-3])
    np.testing.assert_allclose(data.label[:-3], expected, rtol=1e-12)
    assert np.isnan(data.label[-3:]).all()
    assert data.horizon == 3 and data.spec["horizon"] == 3


def test_rows_before_the_longest_look_back_are_nan_and_the_rest_finite(bars: Bars) -> None:
    data = build_dataset(bars)
    lookback = data.spec["lookback"]

    assert lookback == 199  # the 200-bar moving average is first complete at row 199
    assert np.isnan(data.features[:lookback]).all()
    assert np.isfinite(data.features[lookback:]).all()


def test_feature_values_follow_their_definitions(bars: Bars) -> None:
    data = build_dataset(bars)
    col = {name: data.features[:, i] for i, name in enumerate(data.feature_names)}
    close, t = bars.close, 700

    assert col["ret_8"][t] == pytest.approx(np.log(close[t] / close[t - 8]))
    one_bar = np.diff(np.log(close[t - 12 : t + 1]))
    assert col["vol_12"][t] == pytest.approx(one_bar.std(ddof=1))
    assert col["ma_dist_50"][t] == pytest.approx(close[t] / close[t - 49 : t + 1].mean() - 1)
    change = np.diff(close[t - 14 : t + 1])
    gain, loss = change.clip(min=0).mean(), (-change).clip(min=0).mean()
    assert col["rsi_14"][t] == pytest.approx(gain / (gain + loss))
    log_volume = np.log1p(bars.volume[t - 47 : t + 1])
    z = (log_volume[-1] - log_volume.mean()) / log_volume.std(ddof=1)
    assert col["volume_z_48"][t] == pytest.approx(z)


def test_resolved_spec_is_stored_json_safe_and_validates_to_itself(bars: Bars) -> None:
    data = build_dataset(bars, {"return_lags": [1, 3], "ma_windows": [20]})

    assert data.feature_names == data.spec["feature_names"]
    assert data.feature_names == [
        "ret_1", "ret_3", "vol_12", "vol_48", "rsi_14", "ma_dist_20", "volume_z_48",
    ]  # fmt: skip
    assert data.spec["horizon"] == DEFAULT_FEATURE_SPEC["horizon"]
    stored = json.loads(json.dumps(data.spec))
    assert validate_feature_spec(stored) == data.spec


def test_families_can_be_left_out(bars: Bars) -> None:
    spec = {"volatility_windows": [], "rsi_period": None, "ma_windows": [], "return_lags": [1]}
    data = build_dataset(bars, {**spec, "volume_zscore_window": None})

    assert data.feature_names == ["ret_1"]
    assert data.spec["lookback"] == 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"return_lags": [0, 2]}, "return_lags must be an integer >= 1"),
        ({"volatility_windows": [1]}, "volatility_windows must be an integer >= 2"),
        ({"ma_windows": [-5]}, "ma_windows"),
        ({"rsi_period": 0}, "rsi_period"),
        ({"volume_zscore_window": 2.5}, "volume_zscore_window"),
        ({"horizon": 0}, "horizon"),
        ({"horizon": True}, "horizon"),
        ({"return_lags": 4}, "must be a list"),
        ({"return_lags": [2, 2]}, "duplicates"),
        ({"macd": [12, 26]}, "unknown feature spec keys: \\['macd'\\]"),
        ({"return_lags": [], "volatility_windows": [], "rsi_period": None, "ma_windows": [],
          "volume_zscore_window": None}, "no features"),
        ({"feature_names": ["ret_1"]}, "does not match"),
    ],
)  # fmt: skip
def test_bad_specs_are_refused(spec: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_feature_spec(spec)


def test_a_spec_must_be_an_object() -> None:
    with pytest.raises(ValueError, match="JSON object, got list"):
        validate_feature_spec([1, 2])  # type: ignore[arg-type]


def test_horizon_argument_is_validated(bars: Bars) -> None:
    with pytest.raises(ValueError, match="horizon"):
        build_dataset(bars, horizon=0)


def test_bad_prices_are_refused(bars: Bars) -> None:
    close = bars.close.copy()
    close[10] = -1.0
    broken = Bars(bars.timestamp, bars.open, bars.high, bars.low, close, bars.volume)
    with pytest.raises(ValueError, match="close prices must be finite and positive"):
        build_dataset(broken)
