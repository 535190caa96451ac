"""Signals for trading services: a version's target position for the latest stored bar, or for
bars a service sends.

Loaded models are cached per process by artifact sha256, so a promotion or rollback is served from
the next request on (each request resolves the version from the registry, then looks its artifact
up in the cache). Only the bars a signal needs are read: the features' warm-up and PATH_BARS.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from django.utils import timezone

from clm_project.exceptions import DomainError, InvalidInput, NotFound
from registry import selectors
from registry.artifacts import ArtifactError, artifact_load
from registry.models import ModelStatus, ModelVersion, RegisteredModel
from training.data.bars import as_datetime, bars_last
from training.data.dataset import Bars
from training.data.ingest import BarImportError, read_bar_rows
from training.evaluation.backtest import PERIODS_PER_YEAR
from training.models import Bar
from training.promotion.models import ExperimentStatus
from training.serving.inference import ArtifactFormatError, LoadedModel, model_from_trainer
from training.trainers import TrainerError, trainer_class

CACHE_SIZE = 32
MAX_PREDICT_BARS = 20_000
# A signal is fresh while its bar is at most this many bar lengths old.
FRESH_BARS = 2


class ModelCache:
    """Loaded models by artifact sha256, least recently used out first, safe across threads."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # artifacts read from storage since start (a miss each)

    def get(self, version: ModelVersion) -> LoadedModel:
        key = version.artifact_sha256
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        model = _load(version)
        with self._lock:
            self.loads += 1
            self._models[key] = model
            while len(self._models) > self.size:
                self._models.popitem(last=False)
        return model

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
            self.loads = 0


model_cache = ModelCache()


def _load(version: ModelVersion) -> LoadedModel:
    label = f"{version.model.model_id} v{version.version}"
    if not version.artifact_path:
        raise DomainError(f"{label} has no artifact")
    try:
        blob = artifact_load(path=version.artifact_path, sha256=version.artifact_sha256)
        trainer = trainer_class(version.model.model_type).loads(blob)
        return model_from_trainer(
            trainer, version.feature_spec or None, sha256=version.artifact_sha256
        )
    except (ArtifactError, TrainerError, ArtifactFormatError) as exc:
        raise DomainError(f"{label} cannot be served: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# Which version


def serving_version(
    *, model_id: str, version: int | None = None, at: datetime | None = None
) -> ModelVersion:
    """The version a signal comes from: `version` (any but failed), else production at `at`,
    else production now."""
    versions = ModelVersion.objects.select_related("model").filter(model__model_id=model_id)
    if version is None and at is None:  # the hot path: one query
        found = versions.filter(status=ModelStatus.PRODUCTION).first()
        if found is None:
            selectors.registered_model_get(model_id=model_id)
            raise NotFound(f"model {model_id!r} has no production version")
        return found
    selectors.registered_model_get(model_id=model_id)
    if version is not None:
        found = versions.filter(version=version).first()
        if found is None:
            raise NotFound(f"model {model_id!r} has no version {version}")
        if found.status == ModelStatus.FAILED:
            raise DomainError(f"{model_id} v{version} failed; it serves no signal")
        return found
    live = selectors.production_version_at(model_id=model_id, at=at)
    if live is None:
        raise NotFound(f"model {model_id!r} had no production version at {at.isoformat()}")
    return versions.get(pk=live.pk)


# ---------------------------------------------------------------------------------------------
# Signals from stored bars


@dataclass(frozen=True)
class Signal:
    model_id: str
    version: int
    status: str
    artifact_sha256: str
    position: float
    bar_timestamp: datetime
    close: float
    bars_used: int
    bar_age_seconds: float
    fresh: bool
    computed_at: datetime
    allocation: list[dict[str, Any]] | None


def bar_seconds(timeframe: str) -> float:
    return 365 * 86_400 / PERIODS_PER_YEAR[timeframe]


@dataclass(frozen=True)
class _Computed:
    position: float
    bar_time: datetime
    close: float
    bars_used: int


class PositionCache:
    """Positions by (artifact sha256, series, latest bar with its values): a signal is computed
    once per new or updated latest bar, then served from memory. A correction to an older bar is
    seen from the next new bar on."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._items: OrderedDict[tuple, _Computed] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> _Computed | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple, value: _Computed) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


position_cache = PositionCache()


def _latest_bar(model: RegisteredModel, at: datetime | None) -> tuple:
    bars = Bar.objects.filter(symbol=model.symbol, timeframe=model.timeframe)
    if at is not None:
        bars = bars.filter(timestamp__lte=at)
    row = (
        bars.order_by("-timestamp")
        .values_list("timestamp", "open", "high", "low", "close", "volume")
        .first()
    )
    if row is None:
        when = f" at or before {at.isoformat()}" if at else ""
        raise NotFound(f"no bars of {model.symbol} {model.timeframe}{when}")
    return row


def _position(model: RegisteredModel, version: ModelVersion, latest: tuple) -> _Computed:
    """The version's position for the bar `latest` (a row of _latest_bar), from the cache or
    computed from the bars the model needs up to it."""
    key = (version.artifact_sha256, model.symbol, model.timeframe, latest)
    found = position_cache.get(key)
    if found is not None:
        return found
    loaded = model_cache.get(version)
    bars = bars_last(model.symbol, model.timeframe, loaded.signal_bars, end=latest[0])
    try:
        position = loaded.latest_position(bars)
    except ValueError as exc:
        raise DomainError(f"{model.model_id}: no position: {exc}") from exc
    computed = _Computed(
        position=position,
        bar_time=as_datetime(bars.timestamp[-1]),
        close=float(bars.close[-1]),
        bars_used=len(bars),
    )
    position_cache.put(key, computed)
    return computed


def signal_get(*, model_id: str, version: int | None = None, at: datetime | None = None) -> Signal:
    """The target position of a version for the latest stored bar (at or before `at`).

    Without `version` and `at`, a running A/B experiment's allocation comes along, each arm with
    its own position for the same bar.
    """
    found = serving_version(model_id=model_id, version=version, at=at)
    model = found.model
    latest = _latest_bar(model, at)
    computed = _position(model, found, latest)
    now = timezone.now()
    age = (now - computed.bar_time).total_seconds()
    allocation = None
    if version is None and at is None:
        allocation = _allocation_with_positions(model, found, computed.position, latest=latest)
    return Signal(
        model_id=model.model_id,
        version=found.version,
        status=found.status,
        artifact_sha256=found.artifact_sha256,
        position=computed.position,
        bar_timestamp=computed.bar_time,
        close=computed.close,
        bars_used=computed.bars_used,
        bar_age_seconds=age,
        fresh=age <= FRESH_BARS * bar_seconds(model.timeframe),
        computed_at=now,
        allocation=allocation,
    )


def _allocation_with_positions(
    model: RegisteredModel, production: ModelVersion, position: float, *, latest: tuple
) -> list[dict[str, Any]] | None:
    """A running experiment's arms with each arm's position for the bar `latest`; None without."""
    from training.promotion.experiments import allocation_get

    if not model.experiments.filter(status=ExperimentStatus.RUNNING).exists():
        return None
    allocation = allocation_get(model_id=model.model_id)
    if allocation.experiment is None:
        return None
    arms = []
    for arm in allocation.arms:
        if arm["version"] == production.version:
            arm_position = position
        else:
            version = ModelVersion.objects.select_related("model").get(
                model=model, version=arm["version"]
            )
            arm_position = _position(model, version, latest).position
        arms.append({**arm, "experiment_id": allocation.experiment.pk, "position": arm_position})
    return arms


# ---------------------------------------------------------------------------------------------
# Positions for bars sent by the caller


def bars_from_rows(rows: list[dict[str, Any]]) -> Bars:
    """Bars from JSON rows, checked as bar ingestion checks a batch (training.data.ingest):
    every bad row is named by its index in the body; rows come out sorted by time."""
    if not rows:
        raise InvalidInput("at least one bar is required", field="bars")
    if len(rows) > MAX_PREDICT_BARS:
        raise InvalidInput(f"at most {MAX_PREDICT_BARS} bars per request", field="bars")
    try:
        clean = read_bar_rows(rows).frame
    except BarImportError as exc:
        named = [_body_index(message) for message in exc.errors]
        raise InvalidInput(
            f"{len(named)} bad bars: {named[0]}", extra={"errors": {"bars": named[:50]}}
        ) from exc
    timestamps = clean["timestamp"].dt.tz_convert(None).to_numpy().astype("datetime64[s]")
    return Bars(timestamp=timestamps, **{c: clean[c].to_numpy(np.float64) for c in _PRICE_COLUMNS})


def _body_index(message: str) -> str:
    """'row 2: reason' (rows count from 1) as 'bars[1]: reason' (the body's own index)."""
    head, sep, reason = message.partition(": ")
    number = head.removeprefix("row ")
    if not sep or not number.isdigit():
        return message
    return f"bars[{int(number) - 1}]: {reason}"


_PRICE_COLUMNS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class Prediction:
    model_id: str
    version: int
    artifact_sha256: str
    timestamps: np.ndarray
    positions: np.ndarray
    warmup_bars: int


def predict(*, model_id: str, rows: list[dict[str, Any]], version: int | None = None) -> Prediction:
    """Positions of a version (production by default) for the bars sent, one per bar."""
    found = serving_version(model_id=model_id, version=version)
    bars = bars_from_rows(rows)
    loaded = model_cache.get(found)
    try:
        positions = loaded.positions(bars)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="bars") from exc
    return Prediction(
        model_id=model_id,
        version=found.version,
        artifact_sha256=found.artifact_sha256,
        timestamps=bars.timestamp,
        positions=positions,
        warmup_bars=loaded.warmup_bars,
    )
