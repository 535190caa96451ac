"""Paper trading: versions' positions backtested on the stored bars after a moment, with fees.

Shadow comparisons, experiments with computed returns and automatic rollback all judge a version
by its paper returns on bars it never saw, computed here the same way for each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from django.db.models import Max

from registry.artifacts import artifact_load
from registry.models import ModelVersion
from training.data.bars import as_datetime, as_datetime64, bars_last, load_bars
from training.data.features import build_dataset, validate_feature_spec
from training.data.selectors import stored_periods_per_year
from training.evaluation.backtest import backtest
from training.models import Bar
from training.trainers import trainer_class


@dataclass(frozen=True)
class PaperTrades:
    """Positions and per-bar strategy returns of several versions on the bars after a time.

    `returns[pk]` is the backtest's s[0..n-1] (s[0] is the entry cost) over `timestamps`.
    """

    timestamps: np.ndarray
    close: np.ndarray
    positions: dict[int, np.ndarray]
    returns: dict[int, np.ndarray]

    def __len__(self) -> int:
        return len(self.timestamps)


def paper_trade(versions: list[ModelVersion], *, after: datetime, fee: float) -> PaperTrades:
    """Backtest each version's positions on the stored bars after `after`, as the performance
    monitor does for production: bars from the features' look-back before `after`, the version's
    own feature spec, its artifact (sha256-verified), and the METRICS.md backtest with `fee`."""
    model = versions[0].model
    specs = {v.pk: validate_feature_spec(v.feature_spec or None) for v in versions}
    lookback = max(spec["lookback"] for spec in specs.values())
    history = bars_last(model.symbol, model.timeframe, lookback + 1, end=after)
    start = as_datetime(history.timestamp[0]) if len(history) else after
    bars = load_bars(model.symbol, model.timeframe, start, None)
    live = np.flatnonzero(bars.timestamp > as_datetime64(after))
    if len(live) < 2:  # a backtest needs two bars
        empty = np.empty(0)
        return PaperTrades(live.astype("datetime64[s]"), empty, {}, {})
    window = slice(int(live[0]), len(bars))
    periods = stored_periods_per_year(symbol=model.symbol, timeframe=model.timeframe)
    positions, returns = {}, {}
    for version in versions:
        trainer = trainer_class(model.model_type).loads(
            artifact_load(path=version.artifact_path, sha256=version.artifact_sha256)
        )
        w = np.asarray(trainer.positions(build_dataset(bars, specs[version.pk]), window))
        positions[version.pk] = w
        returns[version.pk] = backtest(
            bars.close[window], w, fee=fee, periods_per_year=periods
        ).returns
    return PaperTrades(bars.timestamp[window], bars.close[window], positions, returns)


def trades_of(close: np.ndarray, positions: np.ndarray) -> int:
    """METRICS.md trades of `positions` over `close` (0 with fewer than two bars)."""
    return backtest(close, positions).trades if len(close) >= 2 else 0


def annualized_sharpe(returns: np.ndarray, periods_per_year: float) -> float | None:
    """METRICS.md Sharpe of a paper account's s[0..n-1] (over s[1..n-1]); None below 3 bars."""
    body = np.asarray(returns)[1:]
    if len(body) < 2:
        return None
    std = body.std(ddof=1)
    return float(body.mean() / std * math.sqrt(periods_per_year)) if std > 0 else 0.0


def latest_bar_at(symbol: str, timeframe: str) -> datetime | None:
    return Bar.objects.filter(symbol=symbol, timeframe=timeframe).aggregate(t=Max("timestamp"))["t"]
