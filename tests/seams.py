"""What tests plug into the pipeline's seams: a trainer that holds a job (CLM_EXTRA_TRAINERS) and a
data loader that fails it (CLM_DATA_LOADER). Both run in real worker processes.

`HoldTrainer` (model type "other") touches the file `started` when it reaches the chosen point
(`hold_in`: "fit", or "positions", which comes after its version is registered), then waits while
the file `hold_while` exists: a test kills the worker at a moment it knows, not one raced against
a timer, and removes the file so that the next attempt goes straight through. With its default
params it holds nothing: a trainer of a few milliseconds, for tests of many jobs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from training.data.dataset import Bars, Dataset
from training.trainers.base import Trainer

HOLD_TRAINER = "other=tests.seams:HoldTrainer"
NO_BARS_LOADER = "tests.seams.no_bars"


class HoldTrainer(Trainer):
    model_type = "other"
    default_params = {"hold_in": "fit", "hold_while": "", "started": "", "pad_bytes": 0}

    def _hold(self, point: str) -> None:
        if self.params["hold_in"] != point:
            return
        if self.params["started"]:
            Path(self.params["started"]).touch()
        while self.params["hold_while"] and Path(self.params["hold_while"]).exists():
            time.sleep(0.05)

    def fit(self, data: Dataset, train: slice, validation: slice | None = None) -> dict[str, float]:
        self._hold("fit")
        return {"rows": float(train.stop - train.start)}

    def _positions(self, data: Dataset, window: slice) -> np.ndarray:
        # "positions" holds in the evaluate step: on the test window (the newest rows), not on
        # the validation window the train step scores first.
        if window.stop >= len(data):
            self._hold("positions")
        return np.ones(window.stop - window.start)

    def dumps(self) -> bytes:
        """`pad_bytes` makes the artifact that much larger (an upload that takes a while)."""
        pad = "0" * int(self.params["pad_bytes"])
        return json.dumps({"params": self.params, "seed": self.seed, "pad": pad}).encode()

    @classmethod
    def loads(cls, blob: bytes) -> HoldTrainer:
        state = json.loads(blob)
        return cls(state["params"], seed=state["seed"])


def no_bars(symbol: str, timeframe: str, window: Any) -> Bars:
    """A market-data source that has nothing: every job fails at fetch_data."""
    empty = np.array([], dtype=float)
    return Bars(np.array([], dtype="datetime64[s]"), empty, empty, empty, empty, empty)


def broken_loader(symbol: str, timeframe: str, window: Any) -> Bars:
    """A market-data source that is down: the job fails with an unexpected error."""
    raise ConnectionError(f"market data for {symbol} {timeframe} unreachable")
