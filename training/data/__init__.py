"""Market data: bars (storage, import, the loader seam), datasets, features, splits, synthetic data.

`training.data.fetch_training_data` (the default CLM_DATA_LOADER) resolves lazily to
`training.data.bars.fetch_training_data`, so importing a pure submodule needs no Django.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "fetch_training_data":
        from training.data.bars import fetch_training_data

        return fetch_training_data
    raise AttributeError(name)
