"""Pictures of a generation's Pareto front over the three objectives NSGA-II ranks on (pure).

Sharpe ratio against maximum drawdown, with the third objective, profit factor, as each point's
colour: a rank-1 candidate that looks dominated in the plane is better on profit factor, which its
colour shows. Earlier generations' fronts are drawn faded, each with its own legend entry; the
legend and the colour bar sit outside the data.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no global figure state), so it is
safe in threads and in worker processes without a display.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

FORMATS = {"png": "image/png", "svg": "image/svg+xml"}
# As NSGA-II counts them (evolution.nsga.PROFIT_FACTOR_CAP): an infinite profit factor is 10.
PROFIT_FACTOR_CAP = 10.0
COLOURS = "viridis"


def profit_factor_of(point: Mapping[str, Any]) -> float | None:
    """The profit factor a point is coloured by: infinite and above-cap values at the cap."""
    value = point.get("profit_factor")
    if point.get("profit_factor_infinite") or (value is not None and math.isinf(value)):
        return PROFIT_FACTOR_CAP
    return None if value is None else min(float(value), PROFIT_FACTOR_CAP)


def front_picture(
    *,
    points: Sequence[Mapping[str, Any]],
    front: Sequence[Mapping[str, Any]],
    earlier_fronts: Sequence[Sequence[Mapping[str, Any]]] = (),
    title: str,
    fmt: str = "png",
) -> bytes:
    """`front_figure` as PNG or SVG."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown picture format {fmt!r}; one of {', '.join(FORMATS)}")
    figure = front_figure(points=points, front=front, earlier_fronts=earlier_fronts, title=title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt)
    return buffer.getvalue()


def front_figure(
    *,
    points: Sequence[Mapping[str, Any]],
    front: Sequence[Mapping[str, Any]],
    earlier_fronts: Sequence[Sequence[Mapping[str, Any]]] = (),
    title: str,
) -> Figure:
    """Every evaluated candidate of the generation (infeasible ones as crosses), the Pareto front
    after it as large outlined markers, and earlier generations' fronts faded behind.

    Points and front entries carry `sharpe`, `max_drawdown` (a fraction, drawn in percent) and
    `profit_factor` (with `profit_factor_infinite`); points carry `feasible`.
    """
    figure = Figure(figsize=(8.4, 4.6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    norm = Normalize(vmin=0.0, vmax=PROFIT_FACTOR_CAP)
    for age, earlier in enumerate(earlier_fronts, start=1):
        shown = [p for p in earlier if _ok(p)]
        if not shown:
            continue
        shade = 0.8 - 0.45 * age / (len(earlier_fronts) + 1)
        axes.scatter(
            [100 * p["max_drawdown"] for p in shown],
            [p["sharpe"] for p in shown],
            marker="D",
            s=18,
            facecolors="none",
            edgecolors=[(shade, shade, shade)],
            label=f"front after generation {age}",
            zorder=1,
        )
    mappable = None
    for feasible, marker, label in ((True, "o", "candidate"), (False, "x", "too few trades")):
        chosen = [p for p in points if bool(p.get("feasible")) == feasible and _ok(p)]
        if chosen:
            colours = [profit_factor_of(p) for p in chosen]
            mappable = axes.scatter(
                [100 * p["max_drawdown"] for p in chosen],
                [p["sharpe"] for p in chosen],
                marker=marker,
                c=[0.0 if c is None else c for c in colours],
                cmap=COLOURS,
                norm=norm,
                s=24,
                label=label,
                zorder=2,
            )
    shown = [p for p in front if _ok(p)]
    if shown:
        mappable = axes.scatter(
            [100 * p["max_drawdown"] for p in shown],
            [p["sharpe"] for p in shown],
            c=[profit_factor_of(p) or 0.0 for p in shown],
            cmap=COLOURS,
            norm=norm,
            s=70,
            edgecolors="tab:red",
            linewidths=1.6,
            label="Pareto front (rank 1 on all three)",
            zorder=4,
        )
    axes.set_xlabel("maximum drawdown (%)")
    axes.set_ylabel("Sharpe ratio (annualized, out of sample)")
    axes.set_title(title, fontsize=10)
    axes.grid(True, alpha=0.3)
    if mappable is not None:
        bar = figure.colorbar(mappable, ax=axes, pad=0.01)
        bar.set_label(f"profit factor (∞ and above {PROFIT_FACTOR_CAP:g} at {PROFIT_FACTOR_CAP:g})")
    if points or shown or earlier_fronts:
        axes.legend(
            loc="upper left", bbox_to_anchor=(0.0, -0.16), ncol=3, fontsize=8, frameon=False
        )
    else:
        axes.text(0.5, 0.5, "no evaluated candidate yet", ha="center", transform=axes.transAxes)
    return figure


def _ok(point: Mapping[str, Any]) -> bool:
    return point.get("sharpe") is not None and point.get("max_drawdown") is not None
