"""In-memory market data and the model-ready dataset built from it (pure numpy, no Django)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any, NoReturn

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

    @functools.cached_property
    def sha256(self) -> str:
        """The bars' digest (timestamps as int64 seconds, then open, high, low, close, volume):
        a version's manifest `data_sha256`. Worked out once per Bars: bars are not changed in
        place (a worker's cached ones are read-only)."""
        digest = hashlib.sha256()
        for array in (self.timestamp.astype("int64"), self.open, self.high, self.low, self.close,
                      self.volume):  # fmt: skip
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

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
    label: np.ndarray | HiddenLabels
    horizon: int
    spec: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.bars)

    def unlabelled(self) -> Dataset:
        """The same bars and features with the label replaced by HiddenLabels."""
        if isinstance(self.label, HiddenLabels):
            return self
        return dataclasses.replace(self, label=HiddenLabels(len(self.label)))


class LabelsHidden(Exception):
    """Code that must not see the future (positions for an evaluation window) read a label."""


class HiddenLabels:
    """Stands in for the label array where reading it would be look-ahead: every use raises.

    Indexing, iteration, len(), numpy conversion, arithmetic and comparisons all raise
    LabelsHidden, so a model that peeks fails loudly instead of scoring on bars it could not know.
    """

    __slots__ = ("n_rows",)

    def __init__(self, n_rows: int) -> None:
        self.n_rows = n_rows

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise LabelsHidden(
            "labels are hidden here: positions may use features and bars up to each row, never "
            "the forward-return label"
        )

    __getitem__ = __iter__ = __len__ = __bool__ = _refuse
    __array__ = __array_ufunc__ = __array_function__ = _refuse  # numpy conversions and calls
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _refuse
    __truediv__ = __rtruediv__ = __pow__ = __neg__ = __abs__ = _refuse
    __lt__ = __le__ = __gt__ = __ge__ = __eq__ = __ne__ = _refuse
    __hash__ = None  # type: ignore[assignment]

    def __getattr__(self, name: str) -> NoReturn:
        self._refuse()

    def __repr__(self) -> str:
        return f"HiddenLabels({self.n_rows} rows)"
