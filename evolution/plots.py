"""Pictures of a generation's Pareto front, Sharpe ratio against maximum drawdown (pure).

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no global figure state), so it is
safe in threads and in worker processes without a display.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

FORMATS = {"png": "image/png", "svg": "image/svg+xml"}


def front_picture(
    *,
    points: Sequence[Mapping[str, Any]],
    front: Sequence[Mapping[str, Any]],
    earlier_fronts: Sequence[Sequence[Mapping[str, Any]]] = (),
    title: str,
    fmt: str = "png",
) -> bytes:
    """Every evaluated candidate of the generation (infeasible ones as crosses), the Pareto front
    after it as a step line, and earlier generations' fronts faded behind.

    `points` and front entries carry `sharpe` and `max_drawdown` (a fraction); points carry
    `feasible`.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown picture format {fmt!r}; one of {', '.join(FORMATS)}")
    figure = Figure(figsize=(6.4, 4.4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for age, earlier in enumerate(earlier_fronts, start=1):
        xs, ys = _front_line(earlier)
        shade = 0.35 + 0.5 * age / (len(earlier_fronts) + 1)
        axes.step(xs, ys, where="post", color=(shade, shade, 0.9), linewidth=1, zorder=1)
    for feasible, marker, label in ((True, "o", "candidate"), (False, "x", "too few trades")):
        chosen = [p for p in points if bool(p.get("feasible")) == feasible and _ok(p)]
        if chosen:
            axes.scatter(
                [100 * p["max_drawdown"] for p in chosen],
                [p["sharpe"] for p in chosen],
                marker=marker,
                color="0.55",
                s=22,
                label=label,
                zorder=2,
            )
    shown = [p for p in front if _ok(p)]
    if shown:
        xs, ys = _front_line(shown)
        axes.step(xs, ys, where="post", color="tab:red", linewidth=1.5, zorder=3)
        axes.scatter(
            [100 * p["max_drawdown"] for p in shown],
            [p["sharpe"] for p in shown],
            color="tab:red",
            s=36,
            label="Pareto front",
            zorder=4,
        )
    axes.set_xlabel("maximum drawdown (%)")
    axes.set_ylabel("Sharpe ratio (annualized, out of sample)")
    axes.set_title(title, fontsize=10)
    axes.grid(True, alpha=0.3)
    if points or shown:
        axes.legend(loc="lower right", fontsize=8)
    else:
        axes.text(0.5, 0.5, "no evaluated candidate yet", ha="center", transform=axes.transAxes)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt)
    return buffer.getvalue()


def _ok(point: Mapping[str, Any]) -> bool:
    return point.get("sharpe") is not None and point.get("max_drawdown") is not None


def _front_line(front: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[float]]:
    """The front as a staircase: best Sharpe reachable at or below each drawdown."""
    ordered = sorted((p for p in front if _ok(p)), key=lambda p: p["max_drawdown"])
    xs, ys, best = [], [], float("-inf")
    for p in ordered:
        if p["sharpe"] > best:
            best = p["sharpe"]
            xs.append(100 * p["max_drawdown"])
            ys.append(best)
    return xs, ys
