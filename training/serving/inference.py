"""Turn a model artifact into positions, with no CLM server, database or Django settings.

A trading service that downloaded `GET /clm/models/{model_id}/versions/{n}/artifact` calls

    model = load_artifact("xgboost-btcusdt-1h-v3.clm")
    positions = model.positions(bars)      # one sized target position in [-1, 1] per bar

where `bars` is a `training.dataset.Bars`, a pandas DataFrame or a mapping with the columns
timestamp, open, high, low, close, volume (oldest first). The artifact format is described in
docs/serving.md. The CLM server computes its signals with this same object, so a service that
sends the same bars gets the same positions.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.data.dataset import Bars
from training.data.features import build_dataset, validate_feature_spec
from training.trainers import Trainer, TrainerError, trainer_class

# Bars before the latest one over which a signal's position path is followed (starting flat):
# families that hold a position inside their no-trade band, and the RL agents whose action depends
# on the position held, need a path; a fixed length makes every signal reproducible.
PATH_BARS = 256

COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
_FEATURE_NAME = re.compile(r"^(ret|vol|rsi|ma_dist|volume_z)_(\d+)$")
_SPEC_KEYS = {
    "ret": "return_lags",
    "vol": "volatility_windows",
    "ma_dist": "ma_windows",
    "rsi": "rsi_period",
    "volume_z": "volume_zscore_window",
}


class ArtifactFormatError(ValueError):
    """The bytes are not a readable CLM artifact, or do not match the expected sha256."""


@dataclass
class LoadedModel:
    """A fitted model with the feature spec it was trained on: bars in, positions out."""

    trainer: Trainer
    feature_spec: dict[str, Any]
    sha256: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def model_type(self) -> str:
        return self.trainer.model_type

    @property
    def warmup_bars(self) -> int:
        """Bars of history before the first bar that can get a non-flat position: the features'
        look-back plus, for the deep families, the network's input window and volatility window,
        and the volatility look-back of position sizing."""
        params = getattr(self.trainer, "params", {}) or {}
        extra = max(int(params.get(name, 0) or 0) for name in
                    ("input_size", "vol_window", "vol_lookback"))  # fmt: skip
        return int(self.feature_spec["lookback"]) + extra

    @property
    def signal_bars(self) -> int:
        """Bars a signal for the latest bar is computed from: the warm-up, then PATH_BARS."""
        return self.warmup_bars + PATH_BARS

    def positions(self, bars: Bars | Any) -> np.ndarray:
        """The target position for every bar (flat while the features warm up), oldest first.

        The position for bar t uses bars up to t only; the path starts flat at the first bar.
        """
        bars = as_bars(bars)
        if len(bars) == 0:
            return np.empty(0)
        return self.positions_window(bars, slice(0, len(bars)))

    def positions_window(self, bars: Bars, window: slice) -> np.ndarray:
        """Positions for rows `window` of `bars` (earlier rows are history for the features)."""
        dataset = build_dataset(bars, self.feature_spec, horizon=self.feature_spec["horizon"])
        try:
            positions = self.trainer.positions(dataset, window)
        except TrainerError as exc:
            raise ValueError(str(exc)) from exc
        return np.asarray(positions, dtype=np.float64)

    def latest_position(self, bars: Bars) -> float:
        """The position for the last bar, followed over the last PATH_BARS bars (or fewer)."""
        n = len(bars)
        if n == 0:
            raise ValueError("no bars")
        start = max(0, n - PATH_BARS)
        return float(self.positions_window(bars, slice(start, n))[-1])


def load_artifact(
    source: bytes | str | os.PathLike[str],
    *,
    sha256: str | None = None,
    feature_spec: dict[str, Any] | None = None,
) -> LoadedModel:
    """Load an artifact (its bytes or a file path) into a LoadedModel.

    With `sha256` (the `X-Content-SHA256` header of the download) the bytes are verified first.
    The feature spec comes from meta.json (`feature_spec`, or rebuilt from `feature_names` for
    artifacts written before that key existed); `feature_spec` overrides both.
    Raises ArtifactFormatError for anything that is not a readable CLM artifact.
    """
    blob = source if isinstance(source, bytes) else open(source, "rb").read()  # noqa: SIM115
    digest = hashlib.sha256(blob).hexdigest()
    if sha256 is not None and digest != sha256.lower():
        raise ArtifactFormatError(f"sha256 {digest} does not match the expected {sha256}")
    meta = artifact_meta(blob)
    try:
        trainer = trainer_class(str(meta.get("model_type"))).loads(blob)
    except TrainerError as exc:
        raise ArtifactFormatError(str(exc)) from exc
    spec = (
        feature_spec
        or meta.get("feature_spec")
        or spec_from_feature_names(meta.get("feature_names") or [], horizon=meta.get("horizon"))
    )
    return model_from_trainer(trainer, spec, sha256=digest, meta=meta)


def model_from_trainer(
    trainer: Trainer, spec: dict[str, Any] | None, *, sha256: str = "", meta: dict | None = None
) -> LoadedModel:
    """A LoadedModel from an already loaded trainer and the spec it was fitted on."""
    try:
        resolved = validate_feature_spec(spec or None)
    except ValueError as exc:
        raise ArtifactFormatError(f"feature spec: {exc}") from exc
    return LoadedModel(trainer=trainer, feature_spec=resolved, sha256=sha256, meta=meta or {})


def artifact_meta(blob: bytes) -> dict[str, Any]:
    """meta.json of an artifact (a zip archive)."""
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            meta = json.loads(archive.read("meta.json"))
    except (zipfile.BadZipFile, zlib.error, KeyError, ValueError, OSError) as exc:
        raise ArtifactFormatError(f"not a CLM artifact (a zip with meta.json): {exc}") from exc
    if not isinstance(meta, dict):
        raise ArtifactFormatError("meta.json is not a JSON object")
    return meta


def spec_from_feature_names(names: list[str], *, horizon: Any = None) -> dict[str, Any]:
    """The feature spec whose columns are `names` (names encode their windows: `ret_8`, `vol_48`,
    `rsi_14`, `ma_dist_200`, `volume_z_48`)."""
    spec: dict[str, Any] = {
        "return_lags": [],
        "volatility_windows": [],
        "ma_windows": [],
        "rsi_period": None,
        "volume_zscore_window": None,
    }
    for name in names:
        match = _FEATURE_NAME.match(str(name))
        if match is None:
            raise ArtifactFormatError(f"unknown feature {name!r} in meta.json")
        key, window = _SPEC_KEYS[match[1]], int(match[2])
        if isinstance(spec[key], list):
            spec[key].append(window)
        else:
            spec[key] = window
    if horizon is not None:
        spec["horizon"] = horizon
    spec["feature_names"] = list(names)
    try:
        return validate_feature_spec(spec)
    except ValueError as exc:
        raise ArtifactFormatError(f"feature names in meta.json: {exc}") from exc


def as_bars(bars: Bars | Any) -> Bars:
    """Bars from a Bars, a pandas DataFrame or a mapping of equal-length columns."""
    if isinstance(bars, Bars):
        return bars
    if hasattr(bars, "columns"):  # a DataFrame
        import pandas as pd

        frame = bars
        bars = {str(c).lower(): frame[c].to_numpy() for c in frame.columns}
        if "timestamp" in bars:
            moments = pd.to_datetime(
                frame[next(c for c in frame.columns if str(c).lower() == "timestamp")], utc=True
            )
            bars["timestamp"] = moments.dt.tz_localize(None).to_numpy()
    if not isinstance(bars, Mapping):
        raise TypeError(f"bars must be Bars, a DataFrame or a mapping, not {type(bars).__name__}")
    missing = [c for c in COLUMNS if c not in bars]
    if missing:
        raise ValueError(f"bars: missing columns {', '.join(missing)}")
    timestamp = np.asarray(bars["timestamp"])
    if not np.issubdtype(timestamp.dtype, np.datetime64):
        timestamp = np.asarray(timestamp, dtype="datetime64[s]")
    return Bars(
        timestamp=timestamp.astype("datetime64[s]"),
        **{c: np.asarray(bars[c], dtype=np.float64) for c in COLUMNS[1:]},
    )
