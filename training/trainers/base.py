"""The one interface every model family implements.

A trainer is pure: it sees numpy arrays, never the ORM. The pipeline fits it on the training rows
of a Dataset (with the validation rows for the choices a family makes while fitting), asks it for
target positions over the test rows, and stores `dumps()` as the version's single artifact.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from training.data.dataset import Dataset


class TrainerError(Exception):
    """A trainer could not fit or predict (bad params, too little data)."""


class Trainer(ABC):
    model_type: ClassVar[str]
    default_params: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: dict[str, Any] | None = None, *, seed: int = 0) -> None:
        unknown = set(params or {}) - set(self.default_params)
        if unknown:
            raise TrainerError(
                f"unknown {self.model_type} params: {sorted(unknown)}; "
                f"known: {sorted(self.default_params)}"
            )
        self.params: dict[str, Any] = {**self.default_params, **(params or {})}
        self.seed = seed

    @abstractmethod
    def fit(self, data: Dataset, train: slice, validation: slice | None = None) -> dict[str, float]:
        """Fit on rows `train` of `data` (labels inside it are usable); return training metrics.

        `validation` is the split's validation window: a family that makes a choice while fitting
        (the trees' early stopping and calibration) makes it there, on labels that end inside that
        window; the model itself is fitted on `train` only. Rows after the validation window
        (the test window) are never read.
        """

    def positions(self, data: Dataset, window: slice) -> np.ndarray:
        """Target positions in [-1, 1] for each row of `window`, sized.

        The position for row t may use features and bars up to t only (history before the window is
        allowed, labels never). The family's `_positions` gets `data` with its labels hidden, so
        every caller (evaluation, production comparison, shadow, monitors, fitness, serving) is
        covered and a family that reads a label fails with LabelsHidden instead of scoring on the
        future; `_sized` then scales those raw positions the same way for every caller.
        """
        return self._sized(self._positions(data.unlabelled(), window), data, window)

    def _sized(self, raw: np.ndarray, data: Dataset, window: slice) -> np.ndarray:
        """The positions traded for the family's raw ones; without sizing params, the raw ones."""
        return raw

    @abstractmethod
    def _positions(self, data: Dataset, window: slice) -> np.ndarray:
        """`positions` of this family, on data without labels."""

    @abstractmethod
    def dumps(self) -> bytes:
        """Serialize the fitted model, params and seed to one artifact."""

    @classmethod
    @abstractmethod
    def loads(cls, blob: bytes) -> Trainer:
        """Rebuild a fitted trainer from `dumps()` output."""
