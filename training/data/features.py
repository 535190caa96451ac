"""Causal features and the forward-return label, described by a JSON feature spec.

A model version stores the resolved spec it was trained with, so the same features can be rebuilt
for inference. Every feature at row t is computed from bars 0..t only (trailing windows), and every
row before the longest look-back is NaN, so a row is either complete or empty.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from training.data.dataset import Bars, Dataset

DEFAULT_FEATURE_SPEC: dict[str, Any] = {
    "horizon": 4,
    "return_lags": [1, 2, 4, 8, 16, 32],
    "volatility_windows": [12, 48],
    "rsi_period": 14,
    "ma_windows": [10, 50, 200],
    "volume_zscore_window": 48,
}

# Keys a resolved spec carries on top of the inputs; recomputed, and checked when present.
_DERIVED_KEYS = ("feature_names", "lookback")


def validate_feature_spec(spec: dict[str, Any] | None) -> dict[str, Any]:
    """Return the resolved spec: defaults for missing keys, plus `feature_names` and `lookback`.

    `lookback` is the number of leading rows without a full window for every feature (all NaN).

    Windows are counted in bars. `return_lags` k give log(close[t] / close[t-k]);
    `volatility_windows` w the standard deviation of the last w one-bar log returns; `rsi_period` p
    a simple-average RSI scaled to [0, 1]; `ma_windows` w close / SMA_w - 1; `volume_zscore_window`
    w the z-score of log(1 + volume) over the last w bars. `rsi_period` and `volume_zscore_window`
    may be None, and the lists empty, to leave a family out. A resolved spec validates to itself;
    derived keys that do not match (a spec written by another version of this code) are an error,
    not silently replaced.
    """
    if spec is not None and not isinstance(spec, dict):
        raise ValueError(f"feature spec must be a JSON object, got {type(spec).__name__}")
    given = dict(spec or {})
    unknown = set(given) - set(DEFAULT_FEATURE_SPEC) - set(_DERIVED_KEYS)
    if unknown:
        raise ValueError(
            f"unknown feature spec keys: {sorted(unknown)}; known: {sorted(DEFAULT_FEATURE_SPEC)}"
        )
    resolved = copy.deepcopy(DEFAULT_FEATURE_SPEC)
    resolved.update({k: v for k, v in given.items() if k not in _DERIVED_KEYS})

    resolved["horizon"] = _window(resolved["horizon"], "horizon", minimum=1)
    resolved["return_lags"] = _window_list(resolved["return_lags"], "return_lags", minimum=1)
    resolved["volatility_windows"] = _window_list(
        resolved["volatility_windows"], "volatility_windows", minimum=2
    )
    resolved["ma_windows"] = _window_list(resolved["ma_windows"], "ma_windows", minimum=2)
    for key in ("rsi_period", "volume_zscore_window"):
        if resolved[key] is not None:
            resolved[key] = _window(resolved[key], key, minimum=2)

    columns = _columns(resolved)
    if not columns:
        raise ValueError("feature spec selects no features")
    resolved["feature_names"] = [c.name for c in columns]
    resolved["lookback"] = max(c.first_valid for c in columns)
    for key in _DERIVED_KEYS:
        if key in given and given[key] != resolved[key]:
            raise ValueError(
                f"feature spec {key}={given[key]!r} does not match the spec's windows, which give "
                f"{resolved[key]!r}"
            )
    return resolved


def build_dataset(
    bars: Bars, spec: dict[str, Any] | None = None, *, horizon: int | None = None
) -> Dataset:
    """Features and label for every bar; `horizon` overrides the spec's label horizon.

    label[t] = log(close[t + h] / close[t]), NaN for the last h rows.
    """
    resolved = validate_feature_spec(spec)
    if horizon is not None:
        resolved["horizon"] = _window(horizon, "horizon", minimum=1)
    h = resolved["horizon"]
    close = np.asarray(bars.close, dtype=np.float64)
    volume = np.asarray(bars.volume, dtype=np.float64)
    if not (np.isfinite(close).all() and (close > 0).all()):
        raise ValueError("bars: close prices must be finite and positive")
    if not (np.isfinite(volume).all() and (volume >= 0).all()):
        raise ValueError("bars: volume must be finite and non-negative")

    n = len(close)
    columns = _columns(resolved)
    features = np.empty((n, len(columns)))
    for j, column in enumerate(columns):
        features[:, j] = _compute(column, close, volume)
    features[: resolved["lookback"]] = np.nan

    label = np.full(n, np.nan)
    if n > h:
        label[:-h] = np.log(close[h:] / close[:-h])
    return Dataset(
        bars=bars,
        features=features,
        feature_names=list(resolved["feature_names"]),
        label=label,
        horizon=h,
        spec=resolved,
    )


class _Column(NamedTuple):
    name: str
    family: str
    window: int
    first_valid: int


def _columns(spec: dict[str, Any]) -> list[_Column]:
    """Each feature with the first row that has its full window, in column order."""
    columns = [_Column(f"ret_{k}", "ret", k, k) for k in spec["return_lags"]]
    columns += [_Column(f"vol_{w}", "vol", w, w) for w in spec["volatility_windows"]]
    if (p := spec["rsi_period"]) is not None:
        columns.append(_Column(f"rsi_{p}", "rsi", p, p))
    columns += [_Column(f"ma_dist_{w}", "ma_dist", w, w - 1) for w in spec["ma_windows"]]
    if (w := spec["volume_zscore_window"]) is not None:
        columns.append(_Column(f"volume_z_{w}", "volume_z", w, w - 1))
    return columns


def _compute(column: _Column, close: np.ndarray, volume: np.ndarray) -> np.ndarray:
    # Log returns as log(ratio), not a difference of logs: small returns keep full precision.
    w = column.window
    if column.family == "ret":
        out = np.full(len(close), np.nan)
        out[w:] = np.log(close[w:] / close[:-w])
        return out
    if column.family == "vol":
        one_bar = np.full(len(close), np.nan)
        one_bar[1:] = np.log(close[1:] / close[:-1])
        return pd.Series(one_bar).rolling(w).std().to_numpy()
    if column.family == "rsi":
        # Simple averages (Cutler's RSI) rather than Wilder's recursion: the value depends on the
        # last w changes only, so inference on a shorter history gives the same number.
        change = pd.Series(close).diff()
        gain = change.clip(lower=0).rolling(w).mean().to_numpy()
        loss = (-change).clip(lower=0).rolling(w).mean().to_numpy()
        total = gain + loss
        with np.errstate(invalid="ignore", divide="ignore"):
            rsi = gain / total
        rsi[total == 0] = 0.5  # no price change at all in the window: neutral
        return rsi
    if column.family == "ma_dist":
        return close / pd.Series(close).rolling(w).mean().to_numpy() - 1.0
    # volume_z
    log_volume = np.log1p(volume)
    rolling = pd.Series(log_volume).rolling(w)
    mean = rolling.mean().to_numpy()
    std = rolling.std().to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (log_volume - mean) / std
    z[std == 0] = 0.0  # a constant window has no spread: the bar is typical, not infinitely odd
    return z


def _window(value: Any, key: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"feature spec {key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _window_list(values: Any, key: str, *, minimum: int) -> list[int]:
    if not isinstance(values, list | tuple):
        raise ValueError(f"feature spec {key} must be a list of integers, got {values!r}")
    windows = [_window(v, key, minimum=minimum) for v in values]
    if len(set(windows)) != len(windows):
        raise ValueError(f"feature spec {key} has duplicates: {list(values)!r}")
    return windows
