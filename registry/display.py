"""How people read registry figures (the admin's pages): one label and one format per metric.

The API and the database keep fractions (METRICS.md: a max drawdown of 0.15); people read
percentages ("15.0 %") and ratios with two or three significant decimals. Every admin page and
picture formats through here so a figure reads the same everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

DASH = "-"


def percent(value: float | None, digits: int = 1) -> str:
    """A fraction as a percentage: 0.1534 -> "15.3 %"."""
    if value is None or not math.isfinite(value):
        return DASH
    return f"{100 * value:.{digits}f} %"


def ratio(value: float | None, digits: int = 2) -> str:
    """A ratio with `digits` decimals (Sharpe 3.6135623 -> "3.61")."""
    if value is None:
        return DASH
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if math.isnan(value):
        return DASH
    return f"{value:.{digits}f}"


def significant(value: float | None, digits: int = 3) -> str:
    """A figure of any size to `digits` significant digits (hypervolume 0.01234567 -> 0.0123)."""
    if value is None or not math.isfinite(value):
        return ratio(value)
    return f"{value:.{digits}g}"


def count(value: int | None) -> str:
    return DASH if value is None else f"{value:,}"


# field -> (label, formatter); the order is the order of the metric tables.
METRICS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "sharpe": ("Sharpe", ratio),
    "sortino": ("Sortino", ratio),
    "max_drawdown": ("Max drawdown", percent),
    "total_return": ("Total return", percent),
    "cagr": ("CAGR", percent),
    "calmar": ("Calmar", ratio),
    "exposure": ("Exposure", percent),
    "trades": ("Trades", count),
    "win_rate": ("Win rate", percent),
    "profit_factor": ("Profit factor", ratio),
    "avg_trade_return": ("Avg trade return", lambda v: percent(v, 2)),
    "avg_bars_held": ("Avg bars held", lambda v: ratio(v, 1)),
    "psr": ("PSR", percent),
    "dsr": ("DSR", percent),
    "benchmark_sharpe": ("Buy-and-hold Sharpe", ratio),
}
GATE_LABELS = {name: label for name, (label, _) in METRICS.items()}


def metric_label(name: str) -> str:
    return METRICS[name][0] if name in METRICS else name.replace("_", " ")


def metric(name: str, value: Any, *, infinite: bool = False) -> str:
    """One figure as people read it; an infinite profit factor (stored as null) is "∞"."""
    if infinite:
        return "∞"
    if name not in METRICS:
        return significant(value) if isinstance(value, float) else str(value)
    return METRICS[name][1](value)


def evaluation_metric(evaluation: Any, name: str) -> str:
    """A metric of an EvaluationResult (or anything with the same attributes)."""
    if evaluation is None:
        return DASH
    value = getattr(evaluation, name)
    infinite = name == "profit_factor" and bool(getattr(evaluation, "profit_factor_infinite", 0))
    return metric(name, value, infinite=infinite)


def gate_line(name: str, gate: Any) -> tuple[str, str, str, str, bool | None]:
    """(label, value, op, threshold, passed) of one gate verdict, formatted."""
    if not isinstance(gate, dict):
        return metric_label(name), str(gate), "", "", None
    value = metric(name, gate.get("value"), infinite=bool(gate.get("infinite")))
    threshold = gate.get("threshold")
    shown = DASH if threshold is None else metric(name, threshold)
    return metric_label(name), value, gate.get("op", ""), shown, bool(gate.get("passed"))
