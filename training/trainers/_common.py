"""What every model family shares: param checks, row selection, positions, the artifact envelope.

Keeping these in one place is what makes the families interchangeable: they select training rows by
the same leak-free rule, map their scores to positions the same way, and store one self-describing
artifact that `loads` can verify before trusting it.
"""

from __future__ import annotations

import io
import json
import platform
import time
import zipfile
import zlib
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import import_module
from typing import Any, ClassVar

import numpy as np

from training.data.calendars import YEAR_SECONDS, measured_periods_per_year
from training.data.dataset import Dataset
from training.trainers.base import Trainer, TrainerError

ARTIFACT_FORMAT = "clm-trainer/1"
_META = "meta.json"


@dataclass(frozen=True)
class Param:
    """One tunable parameter: its default (whose type is the accepted type) and allowed values."""

    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()

    def check(self, model_type: str, name: str, value: Any) -> Any:
        """`value` in canonical type (an int is accepted for a float), or a clear TrainerError."""
        kind = type(self.default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not kind:
            raise TrainerError(
                f"{model_type} param {name!r} must be {kind.__name__}, got {value!r}"
            )
        if self.choices and value not in self.choices:
            raise TrainerError(
                f"{model_type} param {name!r} must be one of {list(self.choices)}, got {value!r}"
            )
        if self.low is not None and value < self.low:
            raise TrainerError(f"{model_type} param {name!r} must be >= {self.low}, got {value!r}")
        if self.high is not None and value > self.high:
            raise TrainerError(f"{model_type} param {name!r} must be <= {self.high}, got {value!r}")
        return value


def defaults(spec: dict[str, Param]) -> dict[str, Any]:
    return {name: param.default for name, param in spec.items()}


def rows_of(window: slice, n_rows: int, what: str) -> range:
    """The row indices of a contiguous slice; a stepped or reversed slice is a caller error."""
    if not isinstance(window, slice) or window.step not in (None, 1):
        raise TrainerError(f"{what} must be a contiguous slice, got {window!r}")
    rows = range(*window.indices(n_rows))
    if len(rows) == 0:
        raise TrainerError(f"{what} {window!r} selects no rows of a dataset with {n_rows} rows")
    return rows


def fit_rows(data: Dataset, train: slice) -> np.ndarray:
    """Rows of `train` that may be fitted on: finite features and a label window inside the slice.

    Row t's label looks at close[t + horizon], so it is usable only when t + horizon < train.stop;
    anything later would leak the evaluation period into the fit.
    """
    rows = rows_of(train, len(data), "train")
    t = np.arange(rows.start, rows.stop)
    t = t[t + data.horizon < rows.stop]
    finite = np.isfinite(data.label[t]) & np.isfinite(data.features[t]).all(axis=1)
    return t[finite]


def split_tail(rows: np.ndarray, fraction: float, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Split time-ordered rows into a head and a held-out tail, purging head rows whose label
    window reaches into the tail (so the tail is honestly out of sample for the head's model)."""
    n_tail = round(len(rows) * fraction)
    if n_tail == 0:
        return rows, rows[:0]
    tail = rows[-n_tail:]
    head = rows[: len(rows) - n_tail]
    return head[head + horizon <= tail[0]], tail


def banded_positions(
    signal: np.ndarray, *, band: float, scale: float | np.ndarray, hold: bool
) -> np.ndarray:
    """Target position clip(signal / scale, -1, 1), traded only where |signal| >= band.

    Inside the band there is no trade: with `hold` the position decided last is kept (starting
    flat), otherwise the position is flat. Holding is the families' default because each trade
    pays the fee: on the synthetic market it halves the turnover and lifts the after-fee Sharpe
    ratio of every family.
    Rows whose signal is not finite (features still warming up) are flat, and flatness is held.
    """
    signal = np.asarray(signal, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        target = np.clip(signal / scale, -1.0, 1.0)
    finite = np.isfinite(target)
    trade = finite & (np.abs(signal) >= band)
    target = np.where(trade, target, 0.0)
    if not hold:
        return target
    decided = np.where(trade | ~finite, np.arange(len(target)), -1)
    last = np.maximum.accumulate(decided)
    return np.where(last >= 0, target[np.maximum(last, 0)], 0.0)


SIZING_PARAMS: dict[str, Param] = {
    "target_vol": Param(0.10, 0.0, 5.0),
    "vol_lookback": Param(48, 2, 2_000),
    "max_leverage": Param(1.0, 0.01, 1.0),
}
"""Volatility-targeted sizing, shared by every family (`vol_targeted`): `target_vol` is the
annualised volatility a full signal aims for (0 turns sizing off: the raw signal is traded),
`vol_lookback` the bars of realised volatility it is measured over, `max_leverage` the largest
|position| sizing may reach (at most 1: a position of 1 is the whole equity everywhere in CLM)."""


def vol_targeted(
    signal: np.ndarray,
    close: np.ndarray,
    window: range,
    *,
    target_vol: float,
    vol_lookback: int,
    max_leverage: float,
    bars_per_year: float,
) -> np.ndarray:
    """Positions `signal * target_vol / realised_vol`, clipped to [-max_leverage, max_leverage].

    `signal` is the family's raw position for each row of `window` (in [-1, 1]). The realised
    volatility at row t is the standard deviation (ddof 1) of the `vol_lookback` one-bar log
    returns ending at close[t], annualised with `bars_per_year`: bars after t never enter it, and
    it depends on those bars only, so any window over the same bars (evaluation, a signal's short
    path) gives the same position at t. Rows without `vol_lookback` returns before them are flat;
    a realised volatility of 0 gives the cap. With `target_vol` 0 the signal is returned as it is.
    """
    signal = np.asarray(signal, dtype=np.float64)
    if target_vol == 0:
        return signal
    start, stop = window.start, window.stop
    first = max(start - vol_lookback, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        returns = np.diff(np.log(close[first:stop]))
    realised = np.full(stop - start, np.nan)
    # returns[k] is the return into row first + k + 1; row t needs returns of rows t-L+1..t.
    offset = start - first - vol_lookback
    if len(returns) >= vol_lookback:
        std = _rolling_std(returns, vol_lookback) * np.sqrt(bars_per_year)
        rows = np.arange(stop - start) + offset
        have = rows >= 0
        realised[have] = std[rows[have]]
    with np.errstate(invalid="ignore", divide="ignore"):
        leverage = np.minimum(target_vol / realised, max_leverage)
    sized = np.clip(signal * leverage, -max_leverage, max_leverage)
    return np.where(np.isfinite(sized), sized, 0.0)


def _rolling_std(x: np.ndarray, length: int) -> np.ndarray:
    """Sample standard deviation of each run of `length` consecutive values of `x`.

    Summed lag by lag, so each result depends only on its own values, in the same order, however
    long `x` is: a short window and a long one give bit-identical figures for the same bars.
    """
    n = len(x) - length + 1
    total = np.zeros(n)
    for k in range(length):
        total += x[k : k + n]
    mean = total / length
    squares = np.zeros(n)
    for k in range(length):
        deviation = x[k : k + n] - mean
        squares += deviation * deviation
    return np.sqrt(squares / (length - 1))


def bars_per_year(timestamps: np.ndarray) -> float:
    """Bars a year of a series, measured as `auto` annualisation measures it (METRICS.md), or from
    the median spacing (24/7) when the bars span too little time to say."""
    seconds = timestamps.astype("datetime64[s]").astype(np.int64)
    measured = measured_periods_per_year(seconds)
    if measured is not None:
        return float(measured)
    spacing = float(np.median(np.diff(seconds))) if len(seconds) > 1 else 0.0
    return YEAR_SECONDS / spacing if spacing > 0 else float(YEAR_SECONDS / 3_600)


def finite_rows(features: np.ndarray) -> np.ndarray:
    """Rows whose features are all finite (warm-up rows are not): only these get a position."""
    return np.isfinite(features).all(axis=1)


def library_versions(*modules: str) -> dict[str, str]:
    """Versions of the libraries a model was fitted with, recorded so a reload can be audited."""
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for name in modules:
        versions[name] = str(getattr(import_module(name), "__version__", "unknown"))
    return versions


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch on `n` intra-op threads with deterministic algorithms for one call, then restore
    the process settings.

    The networks here are small: on 2 shared cores, thread hand-offs cost more than they gain
    (a DQN fit measured 9x more CPU time on 2 threads than on 1 while another job was running).
    Deterministic algorithms make a retrain with the same data, params and seed give the same
    weights, hence the same artifact bytes (`warn_only`: an op without a deterministic kernel
    warns rather than failing the job).
    """
    import torch

    before = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(n)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


# Every zip entry carries this time (the earliest a zip can record) and these permissions, so an
# artifact's bytes depend on its contents only.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_ZIP_MODE = 0o644 << 16


def deterministic_zip(entries: dict[str, bytes]) -> bytes:
    """A deflated zip of `entries` in name order with fixed timestamps and attributes.

    zipfile stamps each entry with the time it was written, so the same model saved twice would
    otherwise differ in its bytes and its sha256.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, whatever the host
            info.external_attr = _ZIP_MODE
            archive.writestr(info, entries[name])
    return buffer.getvalue()


class BaseTrainer(Trainer):
    """A Trainer with checked params, recorded feature names and horizon, and the zip envelope.

    Subclasses declare `param_spec` (from which `default_params` is derived) and `libraries`, and
    put their fitted state in `_state()` (JSON) and `_files()` (binary payloads).
    """

    param_spec: ClassVar[dict[str, Param]] = {}
    libraries: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: dict[str, Any] | None = None, *, seed: int = 0) -> None:
        super().__init__(params, seed=seed)
        if type(seed) is not int or seed < 0:
            raise TrainerError(f"{self.model_type} seed must be a non-negative int, got {seed!r}")
        self.params = {
            name: self.param_spec[name].check(self.model_type, name, value)
            for name, value in self.params.items()
        }
        self.feature_names: list[str] | None = None
        self.horizon: int | None = None
        # The resolved feature spec: an artifact rebuilds its own features (serving.inference).
        self.feature_spec: dict[str, Any] | None = None
        # Annualises the realised volatility of sizing; measured on the training bars.
        self.bars_per_year: float | None = None

    def _fit_rows(self, data: Dataset, train: slice, *, min_rows: int) -> np.ndarray:
        """Leak-free fit rows of `train`; records what the model is fitted on."""
        rows = fit_rows(data, train)
        if len(rows) < min_rows:
            raise TrainerError(
                f"{self.model_type} needs at least {min_rows} training rows with finite features "
                f"and a label inside the train slice, got {len(rows)}"
            )
        self.feature_names = list(data.feature_names)
        self.horizon = int(data.horizon)
        self.feature_spec = dict(data.spec) or None
        self.bars_per_year = bars_per_year(data.bars.timestamp[train])
        return rows

    def _window_rows(self, data: Dataset, window: slice) -> range:
        """Rows of `window`, after checking the model is fitted on the same features."""
        if self.feature_names is None:
            raise TrainerError(f"{self.model_type} trainer is not fitted")
        if list(data.feature_names) != self.feature_names:
            raise TrainerError(
                f"{self.model_type} model was fitted on features {self.feature_names}, "
                f"the dataset has {list(data.feature_names)}"
            )
        return rows_of(window, len(data), "window")

    def _sized(self, raw: np.ndarray, data: Dataset, window: slice) -> np.ndarray:
        """Volatility-targeted positions (`vol_targeted`, params SIZING_PARAMS)."""
        if self.bars_per_year is None:
            raise TrainerError(f"{self.model_type} trainer is not fitted")
        return vol_targeted(
            raw,
            data.bars.close,
            rows_of(window, len(data), "window"),
            target_vol=self.params["target_vol"],
            vol_lookback=self.params["vol_lookback"],
            max_leverage=self.params["max_leverage"],
            bars_per_year=self.bars_per_year,
        )

    def _state(self) -> dict[str, Any]:
        """Fitted state that is not a binary payload (JSON types only)."""
        return {}

    def _files(self) -> dict[str, bytes]:
        """Binary payloads of the fitted model, by file name."""
        return {}

    def _restore(self, state: dict[str, Any], files: dict[str, bytes]) -> None:
        """Rebuild the fitted model from `_state()` and `_files()` output."""

    def dumps(self) -> bytes:
        if self.feature_names is None:
            raise TrainerError(f"{self.model_type} trainer is not fitted")
        meta = {
            "format": ARTIFACT_FORMAT,
            "model_type": self.model_type,
            "params": self.params,
            "seed": self.seed,
            "feature_names": self.feature_names,
            "feature_spec": self.feature_spec,
            "horizon": self.horizon,
            "bars_per_year": self.bars_per_year,
            "libraries": library_versions(*self.libraries),
            "state": self._state(),
        }
        files = self._files()
        if _META in files:
            raise TrainerError(f"{self.model_type} payload may not be named {_META}")
        return deterministic_zip({_META: json.dumps(meta, sort_keys=True).encode(), **files})

    @classmethod
    def loads(cls, blob: bytes) -> BaseTrainer:
        """Rebuild a trainer from `dumps()` output, refusing corrupt blobs and other families."""
        try:
            with zipfile.ZipFile(io.BytesIO(blob)) as archive:
                meta = json.loads(archive.read(_META))
                files = {name: archive.read(name) for name in archive.namelist() if name != _META}
        except (zipfile.BadZipFile, zlib.error, KeyError, ValueError, TypeError, OSError) as exc:
            raise TrainerError(f"not a readable {cls.model_type} artifact: {exc}") from exc
        if not isinstance(meta, dict) or meta.get("format") != ARTIFACT_FORMAT:
            raise TrainerError(f"not a {ARTIFACT_FORMAT} artifact")
        if meta.get("model_type") != cls.model_type:
            raise TrainerError(
                f"artifact holds a {meta.get('model_type')!r} model, not {cls.model_type!r}"
            )
        try:
            params = dict(meta["params"])
            if "bars_per_year" not in meta:
                # Written before sizing existed: it keeps trading its raw signal.
                params["target_vol"] = 0.0
            trainer = cls(params, seed=meta["seed"])
            trainer.feature_names = list(meta["feature_names"])
            trainer.horizon = int(meta["horizon"])
            trainer.bars_per_year = float(meta.get("bars_per_year") or YEAR_SECONDS / 3_600)
            trainer.feature_spec = meta.get("feature_spec")
            trainer._restore(meta["state"], files)
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise TrainerError(f"corrupt {cls.model_type} artifact: {exc}") from exc
        return trainer


TREE_PARAMS: dict[str, Param] = {
    "n_estimators": Param(300, 1, 20_000),
    "max_depth": Param(4, 1, 16),
    "learning_rate": Param(0.05, 1e-4, 1.0),
    "subsample": Param(0.8, 0.05, 1.0),
    "colsample_bytree": Param(0.8, 0.05, 1.0),
    "reg_lambda": Param(1.0, 0.0, 1e6),
    # Only for a direct fit without a validation window (the pipeline and the fitness always pass
    # the split's): the share of the fit rows held out for early stopping and calibration.
    "validation_fraction": Param(0.2, 0.0, 0.5),
    "early_stopping_rounds": Param(50, 0, 20_000),
    "calibration": Param("auto", choices=("auto", "platt", "isotonic", "none")),
    "no_trade_band": Param(0.05, 0.0, 0.5),
    "hold_in_band": Param(True),
    "position_scale": Param(0.2, 1e-4, 0.5),
    "n_jobs": Param(2, 1, 512),
    **SIZING_PARAMS,
}
_MIN_TREE_ROWS = 50
_EPS = 1e-6


def _logloss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, _EPS, 1.0 - _EPS)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _fit_calibrator(kind: str, margin: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """A monotone map from raw margin to probability, fitted on held-out rows.

    Platt is a two-parameter logistic fit on the margin (shrinks over-confident boosters); isotonic
    is a non-parametric step map (needs more rows). Both are JSON-able, so no pickle is stored.
    """
    if kind == "platt":
        from scipy.optimize import minimize

        def loss(ab: np.ndarray) -> tuple[float, np.ndarray]:
            z = ab[0] * margin + ab[1]
            residual = _sigmoid(z) - y
            value = float(np.mean(np.logaddexp(0.0, z) - y * z))
            return value, np.array([np.mean(residual * margin), np.mean(residual)])

        a, b = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B").x
        return {"kind": "platt", "a": float(a), "b": float(b)}
    if kind == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=_EPS, y_max=1.0 - _EPS, out_of_bounds="clip").fit(margin, y)
        return {
            "kind": "isotonic",
            "x": iso.X_thresholds_.tolist(),
            "y": iso.y_thresholds_.tolist(),
        }
    return {"kind": "none"}


def calibrated_probability(calibrator: dict[str, Any], margin: np.ndarray) -> np.ndarray:
    kind = calibrator["kind"]
    if kind == "platt":
        return _sigmoid(calibrator["a"] * margin + calibrator["b"])
    if kind == "isotonic":
        return np.interp(margin, np.asarray(calibrator["x"]), np.asarray(calibrator["y"]))
    if kind == "none":
        return _sigmoid(margin)
    raise ValueError(f"unknown calibrator {kind!r}")


def choose_calibrator(mode: str, margin: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Fit the calibration `mode` on the held-out tail; "auto" keeps one only if it helps.

    "auto" fits each candidate (none, platt, isotonic) on the first half of the tail and keeps the
    one with the lowest log loss on the second half, then refits it on the whole tail: calibration
    is used only when it beats the raw booster out of sample.
    """
    if mode != "auto":
        return _fit_calibrator(mode, margin, y)
    half = len(margin) // 2
    scores = {
        kind: _logloss(
            calibrated_probability(_fit_calibrator(kind, margin[:half], y[:half]), margin[half:]),
            y[half:],
        )
        for kind in ("none", "platt", "isotonic")
    }
    return _fit_calibrator(min(scores, key=scores.__getitem__), margin, y)


class SignClassifierTrainer(BaseTrainer):
    """Gradient-boosted classifier of the label's sign; position from the calibrated probability.

    Early stopping and calibration are decided on the split's validation window (rows whose label
    ends inside it), so both decisions are made out of sample and on the same bars as every other
    selection step; the booster is fitted on the train rows only. A direct call without a
    validation window holds out the last `validation_fraction` of the fit rows instead (purged by
    the horizon). Rows whose label is exactly zero carry no sign and are left out. Positions:
    `banded_positions` of p - 0.5 with `no_trade_band`, `position_scale` and `hold_in_band`.
    """

    param_spec = TREE_PARAMS

    def __init__(self, params: dict[str, Any] | None = None, *, seed: int = 0) -> None:
        super().__init__(params, seed=seed)
        needs_tail = (
            self.params["early_stopping_rounds"] > 0 or self.params["calibration"] != "none"
        )
        if needs_tail and self.params["validation_fraction"] == 0:
            raise TrainerError(
                f"{self.model_type}: early stopping and calibration need validation_fraction > 0 "
                "(or set early_stopping_rounds=0 and calibration='none')"
            )
        self.calibrator: dict[str, Any] = {"kind": "none"}

    @abstractmethod
    def _train_booster(
        self, x: np.ndarray, y: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray
    ) -> int:
        """Fit the booster (early-stopped on the valid rows when asked); return its tree count."""

    @abstractmethod
    def _margin(self, x: np.ndarray) -> np.ndarray:
        """Raw log-odds of an up move for each row of x."""

    @abstractmethod
    def _booster_bytes(self) -> bytes:
        """The fitted booster in the library's own portable format."""

    @abstractmethod
    def _load_booster(self, raw: bytes) -> None:
        """Inverse of `_booster_bytes`."""

    def _probability(self, x: np.ndarray) -> np.ndarray:
        return calibrated_probability(self.calibrator, self._margin(x))

    def fit(self, data: Dataset, train: slice, validation: slice | None = None) -> dict[str, float]:
        started = time.perf_counter()
        rows = self._fit_rows(data, train, min_rows=_MIN_TREE_ROWS)
        rows = rows[data.label[rows] != 0]
        if validation is None:
            head, tail = split_tail(rows, self.params["validation_fraction"], data.horizon)
        else:
            if rows_of(validation, len(data), "validation").start < train.stop:
                raise TrainerError(
                    f"{self.model_type}: the validation window {validation!r} overlaps the "
                    f"train window {train!r}"
                )
            head, tail = rows, fit_rows(data, validation)
            tail = tail[data.label[tail] != 0]
        y = (data.label > 0).astype(np.float64)
        if len(head) < _MIN_TREE_ROWS or len(np.unique(y[head])) < 2:
            raise TrainerError(
                f"{self.model_type} needs {_MIN_TREE_ROWS} head rows with both up and down labels, "
                f"got {len(head)}"
            )
        x = data.features
        n_trees = self._train_booster(x[head], y[head], x[tail], y[tail])
        self.calibrator = choose_calibrator(
            self.params["calibration"], self._margin(x[tail]), y[tail]
        )
        metrics = {
            "n_train_rows": float(len(head)),
            "n_valid_rows": float(len(tail)),
            "n_trees": float(n_trees),
            "calibrated": float(self.calibrator["kind"] != "none"),
        }
        for name, part in (("train", head), ("valid", tail)):
            if len(part):
                p = self._probability(x[part])
                metrics[f"{name}_accuracy"] = float(np.mean((p > 0.5) == (y[part] == 1)))
                metrics[f"{name}_logloss"] = _logloss(p, y[part])
        metrics["fit_seconds"] = time.perf_counter() - started
        return metrics

    def _positions(self, data: Dataset, window: slice) -> np.ndarray:
        rows = self._window_rows(data, window)
        x = data.features[rows.start : rows.stop]
        ok = finite_rows(x)
        edge = np.full(len(x), np.nan)
        if ok.any():
            edge[ok] = self._probability(x[ok]) - 0.5
        return banded_positions(
            edge,
            band=self.params["no_trade_band"],
            scale=self.params["position_scale"],
            hold=self.params["hold_in_band"],
        )

    def _state(self) -> dict[str, Any]:
        return {"calibrator": self.calibrator}

    def _files(self) -> dict[str, bytes]:
        return {"booster": self._booster_bytes()}

    def _restore(self, state: dict[str, Any], files: dict[str, bytes]) -> None:
        self.calibrator = state["calibrator"]
        # A malformed calibrator fails here, at load time, not at the first positions() call.
        calibrated_probability(self.calibrator, np.zeros(1))
        self._load_booster(files["booster"])
