"""Promotion gates: each threshold of a policy checked against an evaluation's metrics (pure)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GateThresholds:
    """Defaults from METRICS.md; `min_dsr` is optional (None: not required)."""

    min_sharpe: float = 1.0
    min_win_rate: float = 0.52
    min_profit_factor: float = 1.3
    max_drawdown: float = 0.15
    min_trades: int = 50
    min_dsr: float | None = None


def apply_gates(metrics: dict[str, Any], thresholds: GateThresholds) -> tuple[dict, bool]:
    """Return ({gate: {value, threshold, op, passed}}, all passed).

    An infinite profit factor (no losing trade) is reported as value None with `infinite: true` and
    passes its gate.
    """
    profit_factor = metrics["profit_factor"]
    pf_value = None if profit_factor is None or math.isinf(profit_factor) else profit_factor
    checks: list[tuple[str, Any, float | None, str]] = [
        ("sharpe", metrics["sharpe"], thresholds.min_sharpe, ">="),
        ("win_rate", metrics["win_rate"], thresholds.min_win_rate, ">="),
        ("profit_factor", pf_value, thresholds.min_profit_factor, ">="),
        ("max_drawdown", metrics["max_drawdown"], thresholds.max_drawdown, "<="),
        ("trades", metrics["trades"], thresholds.min_trades, ">="),
    ]
    if thresholds.min_dsr is not None:
        checks.append(("dsr", metrics["dsr"], thresholds.min_dsr, ">="))
    gates: dict[str, dict[str, Any]] = {}
    for name, value, threshold, op in checks:
        if name == "profit_factor" and pf_value is None:
            infinite = bool(metrics.get("profit_factor_infinite", profit_factor is not None))
            passed = infinite
            gates[name] = {
                "value": None, "infinite": infinite, "threshold": threshold, "op": op,
                "passed": passed,
            }  # fmt: skip
            continue
        passed = value >= threshold if op == ">=" else value <= threshold
        gates[name] = {"value": value, "threshold": threshold, "op": op, "passed": bool(passed)}
    return gates, all(g["passed"] for g in gates.values())
