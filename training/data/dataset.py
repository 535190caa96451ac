"""In-memory market data and the model-ready dataset built from it (pure numpy, no Django)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Bars:
    """OHLCV bars of one symbol and timeframe, oldest first, as parallel float64 arrays.

    `timestamp` is datetime64[s] (UTC). Every array has the same length.
    """

    timestamp: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.close)
        for name in ("timestamp", "open", "high", "low", "volume"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"bars: {name} has {len(getattr(self, name))} rows, close has {n}")

    def __len__(self) -> int:
        return len(self.close)

    def slice(self, window: slice) -> Bars:
        return Bars(
            timestamp=self.timestamp[window],
            open=self.open[window],
            high=self.high[window],
            low=self.low[window],
            close=self.close[window],
            volume=self.volume[window],
        )


@dataclass(frozen=True)
class Dataset:
    """Bars with their feature matrix and forward-return label.

    `features[t]` uses bars 0..t only; rows before the longest look-back are NaN. `label[t]` is the
    log return from close[t] to close[t + horizon] (NaN for the last `horizon` rows): it looks ahead
    by construction, so it may only be used for fitting on training rows whose label window ends
    before the purge gap.
    """

    bars: Bars
    features: np.ndarray
    feature_names: list[str]
    label: np.ndarray
    horizon: int
    spec: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.bars)
