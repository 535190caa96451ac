"""The one interface every model family implements.

A trainer is pure: it sees numpy arrays, never the ORM. The pipeline fits it on the training rows
of a Dataset, asks it for target positions over the evaluation rows, and stores `dumps()` as the
version's single artifact.
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
    def fit(self, data: Dataset, train: slice) -> dict[str, float]:
        """Fit on rows `train` of `data` (labels inside it are usable); return training metrics."""

    @abstractmethod
    def positions(self, data: Dataset, window: slice) -> np.ndarray:
        """Target positions in [-1, 1] for each row of `window`.

        The position for row t may use features and bars up to t only (history before the window is
        allowed, labels never).
        """

    @abstractmethod
    def dumps(self) -> bytes:
        """Serialize the fitted model, params and seed to one artifact."""

    @classmethod
    @abstractmethod
    def loads(cls, blob: bytes) -> Trainer:
        """Rebuild a fitted trainer from `dumps()` output."""
