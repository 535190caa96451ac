"""Promotion gates: each threshold of a policy checked against an evaluation's metrics (pure).

The DSR gate is on by default (min_dsr 0.95) and applies only where more than one trial exists
(the evaluation's n_trials > 1): with one trial there is no selection to deflate for, and DSR
equals PSR. A policy's empty min_dsr turns it off.

The regime gate (off by default) reads the evaluation's regime slices
(training.evaluation.regime_slices): with `regime_min_bars` N and `regime_max_loss` X both set, a
version fails when some regime with at least N decision bars in the window lost more than X
(total return below -X). Regimes with fewer bars are too thin to judge and do not count; when
none has N bars, the gate passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from training.evaluation.regime_slices import worst_regime_loss

DEFAULT_MIN_DSR = 0.95


@dataclass(frozen=True)
class GateThresholds:
    """Defaults from METRICS.md, plus the DSR gate's; `min_dsr` and the regime gate can be off
    (None)."""

    min_sharpe: float = 1.0
    min_win_rate: float = 0.52
    min_profit_factor: float = 1.3
    max_drawdown: float = 0.15
    min_trades: int = 50
    min_dsr: float | None = DEFAULT_MIN_DSR
    regime_min_bars: int | None = None
    regime_max_loss: float | None = None

    @property
    def regime_gate_on(self) -> bool:
        return self.regime_min_bars is not None and self.regime_max_loss is not None


def apply_gates(
    metrics: dict[str, Any],
    thresholds: GateThresholds,
    *,
    regime_slices: dict[str, dict[str, Any]] | None = None,
) -> tuple[dict, bool]:
    """Return ({gate: {value, threshold, op, passed}}, all passed).

    An infinite profit factor (no losing trade) is reported as value None with `infinite: true` and
    passes its gate. The regime gate's value is the worst qualifying regime's total return (None
    when no regime qualifies), its threshold -regime_max_loss, and it names the regime.
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
    if thresholds.min_dsr is not None and metrics.get("n_trials", 1) > 1:
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
    if thresholds.regime_gate_on:
        gates["regime_loss"] = _regime_gate(regime_slices, thresholds)
    return gates, all(g["passed"] for g in gates.values())


def _regime_gate(
    regime_slices: dict[str, dict[str, Any]] | None, thresholds: GateThresholds
) -> dict[str, Any]:
    if regime_slices is None:
        raise ValueError("the regime gate is on but the evaluation has no regime slices")
    worst = worst_regime_loss(regime_slices, min_bars=int(thresholds.regime_min_bars))
    threshold = -float(thresholds.regime_max_loss)
    gate = {"threshold": threshold, "op": ">=", "min_bars": thresholds.regime_min_bars}
    if worst is None:
        return {**gate, "value": None, "regime": None, "passed": True}
    regime, value = worst
    return {**gate, "value": value, "regime": regime, "passed": bool(value >= threshold)}
