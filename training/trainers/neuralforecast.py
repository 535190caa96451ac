"""Deep forecasters from neuralforecast: NHITS ("nhits") and PatchTST ("patchtst").

Both forecast the next `horizon` log returns of the close (standardized by the training window's
return volatility) from the last `input_size` returns; NHITS also reads the dataset's features as
historical exogenous inputs. The summed forecast, divided by the recent volatility, is a
signal-to-noise ratio; it is expressed in units of its own spread over the training rows, so the
no-trade band and the position scale mean the same thing for any asset and any network.

Positions for an evaluation window come from one batched pass of the network over all sliding
windows (the model's own `predict` with `test_size`, the mechanism behind neuralforecast's
cross-validation without refit): the window for row t ends at row t, and the h rows after it are
zero padding that the model never reads, so there is no look-ahead and 10,000 rows take a fraction
of a second instead of 10,000 predict calls.

neuralforecast, Lightning and torch are imported inside the methods: importing this module stays
cheap, so the web process starts fast.
"""

from __future__ import annotations

import io
import logging
import time
import warnings
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from training.data.dataset import Dataset
from training.trainers._common import (
    SIZING_PARAMS,
    BaseTrainer,
    Param,
    banded_positions,
    defaults,
    finite_rows,
    torch_threads,
)
from training.trainers.base import TrainerError

_LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning")
_EXOG_CLIP = 10.0

COMMON_PARAMS: dict[str, Param] = {
    "input_size": Param(64, 8, 4096),
    "max_steps": Param(300, 1, 1_000_000),
    "learning_rate": Param(1e-3, 1e-6, 1.0),
    "windows_batch_size": Param(256, 8, 8192),
    "vol_window": Param(64, 4, 100_000),
    "no_trade_band": Param(1.0, 0.0, 10.0),
    "hold_in_band": Param(True),
    "position_scale": Param(2.0, 1e-3, 100.0),
    "accelerator": Param("auto", choices=("auto", "cpu", "gpu")),
    "torch_threads": Param(1, 1, 256),
    **SIZING_PARAMS,
}


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's banners ("GPU available", "Seed set") and warnings during one call."""
    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"(pytorch_lightning|lightning_fabric)\b")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _log_returns(close: np.ndarray) -> np.ndarray:
    """r[t] = log(close[t] / close[t-1]); r[0] and non-positive prices give NaN."""
    with np.errstate(invalid="ignore", divide="ignore"):
        log_close = np.log(np.where(close > 0, close, np.nan))
    return np.concatenate([[np.nan], np.diff(log_close)])


class _NeuralForecastTrainer(BaseTrainer):
    """Shared fit / batched forecast / artifact logic; subclasses build the network."""

    libraries = ("neuralforecast", "torch", "pytorch_lightning")

    def __init__(self, params: dict[str, Any] | None = None, *, seed: int = 0) -> None:
        super().__init__(params, seed=seed)
        self._check_architecture()
        self._model: Any = None
        self._y_scale = 1.0
        self._x_mean: np.ndarray | None = None
        self._x_std: np.ndarray | None = None
        self._signal_std = 1.0

    def _check_architecture(self) -> None:
        """Reject param combinations the network cannot be built with."""

    @abstractmethod
    def _network_class(self) -> type:
        """The neuralforecast model class (imported lazily)."""

    @abstractmethod
    def _network_kwargs(self, n_exog: int) -> dict[str, Any]:
        """Architecture arguments of the network, from the params."""

    @property
    def _uses_features(self) -> bool:
        return bool(self.params.get("use_features", False))

    def _build_model(self) -> Any:
        from neuralforecast.losses.pytorch import HuberLoss

        n_exog = len(self.feature_names) if self._uses_features else 0
        p = self.params
        with _quiet_lightning():
            return self._network_class()(
                h=self.horizon,
                input_size=p["input_size"],
                loss=HuberLoss(),
                max_steps=p["max_steps"],
                val_check_steps=p["max_steps"],
                learning_rate=p["learning_rate"],
                windows_batch_size=p["windows_batch_size"],
                inference_windows_batch_size=1024,
                random_seed=self.seed,
                accelerator=p["accelerator"],
                devices=1,
                enable_progress_bar=False,
                enable_model_summary=False,
                enable_checkpointing=False,
                logger=False,
                **self._network_kwargs(n_exog),
            )

    def _temporal(self, data: Dataset, lo: int, hi: int) -> tuple[np.ndarray, list[str]]:
        """Columns y (standardized returns), exogenous features, available_mask for rows lo..hi-1.

        Rows before the first bar are zero with mask 0, so every row can have a full input window.
        """
        pad = max(0, -lo)
        lo = max(lo, 0)
        y = _log_returns(data.bars.close[:hi])[lo:hi] / self._y_scale
        mask = np.isfinite(y)
        columns = [np.where(mask, y, 0.0)]
        names = ["y"]
        if self._uses_features:
            x = (data.features[lo:hi] - self._x_mean) / self._x_std
            x = np.clip(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), -_EXOG_CLIP, _EXOG_CLIP)
            columns.extend(x.T)
            names.extend(f"x{i}" for i in range(x.shape[1]))
        columns.append(mask.astype(np.float64))
        temporal = np.column_stack(columns)
        if pad:
            temporal = np.vstack([np.zeros((pad, temporal.shape[1])), temporal])
        return temporal.astype(np.float32), [*names, "available_mask"]

    @staticmethod
    def _dataset(temporal: np.ndarray, names: list[str]) -> Any:
        import pandas as pd
        from neuralforecast.tsdataset import TimeSeriesDataset

        return TimeSeriesDataset(
            temporal=temporal,
            temporal_cols=pd.Index(names),
            indptr=np.array([0, len(temporal)]),
            y_idx=0,
        )

    def _forecast(self, data: Dataset, start: int, stop: int) -> np.ndarray:
        """Forecast log return summed over the horizon, for decision rows start..stop-1 (batched).

        The series runs from the first input of row `start` to row stop-1, then h rows of padding
        with mask 0: each window's outputs sit on the padding or on later rows, which the network
        does not read (only the input part of a window is fed to it).
        """
        h, n = self.horizon, stop - start
        temporal, names = self._temporal(data, start - self.params["input_size"] + 1, stop)
        temporal = np.vstack([temporal, np.zeros((h, temporal.shape[1]), np.float32)])
        self._model.set_test_size(n + h - 1)
        try:
            with _quiet_lightning():
                forecast = self._model.predict(self._dataset(temporal, names), step_size=1)
        finally:
            self._model.set_test_size(0)
        return forecast.reshape(n, h).astype(np.float64).sum(axis=1) * self._y_scale

    def _signal(self, data: Dataset, start: int, stop: int) -> np.ndarray:
        """Forecast over h divided by the volatility expected over h (from returns up to row t)."""
        import pandas as pd

        returns = pd.Series(_log_returns(data.bars.close[:stop]))
        window = self.params["vol_window"]
        vol = returns.rolling(window, min_periods=max(2, window // 2)).std().to_numpy()[start:stop]
        with np.errstate(invalid="ignore", divide="ignore"):
            return self._forecast(data, start, stop) / (vol * np.sqrt(self.horizon))

    def fit(self, data: Dataset, train: slice, validation: slice | None = None) -> dict[str, float]:
        # A fixed training budget: no choice is made on the validation window.
        with torch_threads(self.params["torch_threads"]):
            return self._fit(data, train)

    def _fit(self, data: Dataset, train: slice) -> dict[str, float]:
        started = time.perf_counter()
        min_rows = self.params["input_size"] + data.horizon + 32
        rows = self._fit_rows(data, train, min_rows=min_rows)
        first, last = int(rows[0]), int(rows[-1]) + data.horizon
        returns = _log_returns(data.bars.close[: last + 1])[first : last + 1]
        self._y_scale = float(np.nanstd(returns)) or 1.0
        x = data.features[rows]
        self._x_mean = x.mean(axis=0)
        self._x_std = np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
        self._model = self._build_model()
        temporal, names = self._temporal(data, first, last + 1)
        with _quiet_lightning():
            self._model.fit(self._dataset(temporal, names))
        signal = self._signal(data, first, int(rows[-1]) + 1)[rows - first]
        spread = float(np.nanstd(signal))
        self._signal_std = spread if np.isfinite(spread) and spread > 0 else 1.0
        metrics = {"n_train_rows": float(len(rows)), "signal_std": self._signal_std}
        if (train_loss := self._model.metrics.get("train_loss")) is not None:
            metrics["train_loss"] = float(train_loss)
        metrics["fit_seconds"] = time.perf_counter() - started
        return metrics

    def _positions(self, data: Dataset, window: slice) -> np.ndarray:
        rows = self._window_rows(data, window)
        with torch_threads(self.params["torch_threads"]):
            signal = self._signal(data, rows.start, rows.stop) / self._signal_std
        signal[~finite_rows(data.features[rows.start : rows.stop])] = np.nan
        return banded_positions(
            signal,
            band=self.params["no_trade_band"],
            scale=self.params["position_scale"],
            hold=self.params["hold_in_band"],
        )

    def _state(self) -> dict[str, Any]:
        return {
            "y_scale": self._y_scale,
            "x_mean": self._x_mean.tolist(),
            "x_std": self._x_std.tolist(),
            "signal_std": self._signal_std,
        }

    def _files(self) -> dict[str, bytes]:
        import torch

        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in self._model.state_dict().items()}, buffer)
        return {"weights.pt": buffer.getvalue()}

    def _restore(self, state: dict[str, Any], files: dict[str, bytes]) -> None:
        import torch

        self._y_scale = float(state["y_scale"])
        self._x_mean = np.asarray(state["x_mean"], dtype=np.float64)
        self._x_std = np.asarray(state["x_std"], dtype=np.float64)
        self._signal_std = float(state["signal_std"])
        self._model = self._build_model()
        weights = torch.load(io.BytesIO(files["weights.pt"]), map_location="cpu", weights_only=True)
        self._model.load_state_dict(weights)


class NHITSTrainer(_NeuralForecastTrainer):
    """NHITS: multi-rate MLP stacks, cheap on CPU; reads the features as historical exogenous."""

    model_type = "nhits"
    param_spec = {
        **COMMON_PARAMS,
        "mlp_width": Param(128, 4, 4096),
        "dropout": Param(0.0, 0.0, 0.9),
        "use_features": Param(True),
    }
    default_params = defaults(param_spec)

    def _network_class(self) -> type:
        from neuralforecast.models import NHITS

        return NHITS

    def _network_kwargs(self, n_exog: int) -> dict[str, Any]:
        width = self.params["mlp_width"]
        return {
            "hist_exog_list": [f"x{i}" for i in range(n_exog)] or None,
            "mlp_units": 3 * [[width, width]],
            "dropout_prob_theta": self.params["dropout"],
        }


class PatchTSTTrainer(_NeuralForecastTrainer):
    """PatchTST: a transformer over patches of the return series (no exogenous inputs)."""

    model_type = "patchtst"
    param_spec = {
        **COMMON_PARAMS,
        "input_size": Param(256, 8, 4096),
        "windows_batch_size": Param(128, 8, 8192),
        "no_trade_band": Param(1.5, 0.0, 10.0),
        "patch_len": Param(32, 2, 512),
        "stride": Param(16, 1, 512),
        "hidden_size": Param(64, 4, 1024),
        "n_heads": Param(4, 1, 64),
        "encoder_layers": Param(2, 1, 12),
        "dropout": Param(0.1, 0.0, 0.9),
    }
    default_params = defaults(param_spec)

    def _check_architecture(self) -> None:
        p = self.params
        if p["patch_len"] > p["input_size"]:
            raise TrainerError("patchtst param 'patch_len' must be <= 'input_size'")
        if p["hidden_size"] % p["n_heads"]:
            raise TrainerError("patchtst param 'hidden_size' must be a multiple of 'n_heads'")

    def _network_class(self) -> type:
        from neuralforecast.models import PatchTST

        return PatchTST

    def _network_kwargs(self, n_exog: int) -> dict[str, Any]:
        p = self.params
        return {
            "patch_len": p["patch_len"],
            "stride": p["stride"],
            "hidden_size": p["hidden_size"],
            "n_heads": p["n_heads"],
            "encoder_layers": p["encoder_layers"],
            "linear_hidden_size": 2 * p["hidden_size"],
            "dropout": p["dropout"],
            "fc_dropout": p["dropout"],
            "revin_subtract_last": False,
        }
