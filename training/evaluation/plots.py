"""Pictures of an evaluation: equity against buy and hold, drawdown below (matplotlib, PNG).

The equity panel can be shaded by each bar's market regime (training.evaluation.regime_slices),
one colour per regime, so a reader sees where the strategy earns and where it loses.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

MAX_POINTS = 1_500  # about two per pixel column of the default picture
# One light colour per regime of the classifier (REGIMES of training.retraining.monitors.regime):
# greens for low, yellows for normal and reds for high volatility, darker with a trend.
REGIME_COLOURS: dict[str, str] = {
    "uptrend:low_vol": "#74c476", "uptrend:normal_vol": "#fdd835", "uptrend:high_vol": "#ef5350",
    "downtrend:low_vol": "#238b45", "downtrend:normal_vol": "#f9a825",
    "downtrend:high_vol": "#b71c1c", "range:low_vol": "#c7e9c0", "range:normal_vol": "#fff59d",
    "range:high_vol": "#ffcdd2", "unclassified": "#e0e0e0",
}  # fmt: skip


def _decimate(
    timestamps: np.ndarray,
    equity: np.ndarray,
    buy_hold: np.ndarray,
    drawdown: np.ndarray,
    regimes: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """At most MAX_POINTS points: each bucket keeps its last equity values (and regime) and its
    deepest drawdown, so the picture is the same and rendering stays fast on long windows."""
    n = len(equity)
    if n <= MAX_POINTS:
        return timestamps, equity, buy_hold, drawdown, regimes
    size = -(-n // MAX_POINTS)
    starts = np.arange(0, n, size)
    ends = np.minimum(starts + size, n) - 1
    return (
        timestamps[ends],
        equity[ends],
        buy_hold[ends],
        np.maximum.reduceat(drawdown, starts),
        regimes[ends],
    )


def _shade_regimes(ax: Any, times: np.ndarray, regimes: np.ndarray) -> None:
    """Fill the panel's height over each regime's bars, one collection per regime present."""
    from matplotlib.patches import Patch

    handles = []
    for name, colour in REGIME_COLOURS.items():
        mine = regimes == name
        if not mine.any():
            continue
        # Bar t's colour reaches to bar t + 1, so a regime of one bar still shows.
        reach = mine | np.concatenate([[False], mine[:-1]])
        ax.fill_between(
            times, 0, 1, where=reach, step="pre", transform=ax.get_xaxis_transform(),
            color=colour, alpha=0.45, linewidth=0, zorder=0,
        )  # fmt: skip
        handles.append(Patch(facecolor=colour, alpha=0.45, label=name))
    ax.add_artist(ax.legend(handles=handles, loc="lower right", fontsize=7, ncol=3, title=None))


# Log-axis labels per decade, finer when equity spans less: never a lone "1.0" on the axis.
LOG_STEPS = (
    (4.0, (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)),
    (20.0, (1.0, 2.0, 3.0, 5.0)),
    (float("inf"), (1.0, 2.0, 5.0)),
)


def _equity_axis(ax: Any) -> None:
    """Log scale once equity spans more than 3x (compounding reads right), labelled in plain
    numbers at steps that give a few labels whatever the span (1, 1.5, 2, 3 or 1, 2, 5, 10)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    values = np.concatenate([np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()])
    values = values[np.isfinite(values) & (values > 0)]
    if values.size and values.max() / values.min() > 3.0:
        span = values.max() / values.min()
        subs = next(steps for limit, steps in LOG_STEPS if span <= limit)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())


def _png(fig: Any) -> bytes:
    """Fixed margins instead of tight_layout, which costs more than drawing the lines."""
    fig.autofmt_xdate()
    fig.subplots_adjust(left=0.09, right=0.98, top=0.93, bottom=0.14, hspace=0.08)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def equity_curve_points(
    *,
    timestamps: np.ndarray,
    equity: np.ndarray,
    buy_hold: np.ndarray,
    regimes: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """What the equity picture draws: at most MAX_POINTS times, equity, buy and hold, drawdown
    and regime labels (empty strings without regimes); small enough to store with a job."""
    drawdown = 1.0 - equity / np.maximum.accumulate(equity)
    labels = np.full(len(equity), "", dtype=object) if regimes is None else np.asarray(regimes)
    if len(labels) != len(equity):
        raise ValueError(f"{len(labels)} regime labels for {len(equity)} bars")
    timestamps, equity, buy_hold, drawdown, labels = _decimate(
        timestamps, equity, buy_hold, drawdown, labels
    )
    return {
        "timestamps": np.asarray(timestamps),
        "equity": np.asarray(equity, dtype=np.float64),
        "buy_hold": np.asarray(buy_hold, dtype=np.float64),
        "drawdown": np.asarray(drawdown, dtype=np.float64),
        "regimes": labels.astype(str),
        "shaded": np.asarray(regimes is not None),
    }


def equity_series_npz(*, points: dict[str, np.ndarray], title: str) -> bytes:
    """The picture's points and title as an .npz (no pickles): a job stores this in a
    millisecond, and the picture is drawn from it when first asked for."""
    buffer = io.BytesIO()
    arrays: dict[str, Any] = {"title": np.asarray(title), **points}
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def equity_curve_png_from_series(blob: bytes) -> bytes:
    """The picture `equity_curve_png` draws, from what `equity_series_npz` stored."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as stored:
        points = {name: stored[name] for name in stored.files}
    title = str(points.pop("title"))
    return _equity_picture(points, title=title)


def equity_curve_png(
    *,
    timestamps: np.ndarray,
    equity: np.ndarray,
    buy_hold: np.ndarray,
    title: str,
    regimes: np.ndarray | None = None,
    width: float = 9.0,
    height: float = 5.0,
) -> bytes:
    """Two stacked panels sharing time: equity vs buy and hold (shaded by each bar's regime when
    `regimes` is given), drawdown in percent."""
    points = equity_curve_points(
        timestamps=timestamps, equity=equity, buy_hold=buy_hold, regimes=regimes
    )
    return _equity_picture(points, title=title, width=width, height=height)


def _equity_picture(
    points: dict[str, np.ndarray], *, title: str, width: float = 9.0, height: float = 5.0
) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    times = points["timestamps"].astype("datetime64[s]").astype(object)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(width, height), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    try:
        if bool(points["shaded"]):
            _shade_regimes(top, times, points["regimes"].astype(object))
        top.plot(times, points["equity"], label="strategy", color="#1f77b4", linewidth=1.2)
        top.plot(
            times, points["buy_hold"], label="buy and hold", color="#7f7f7f", linewidth=1.0,
            alpha=0.8,
        )  # fmt: skip
        _equity_axis(top)
        top.set_ylabel("equity (start = 1)")
        top.set_title(title, fontsize=10)
        top.legend(loc="upper left", fontsize=8)
        top.grid(alpha=0.3)
        bottom.fill_between(times, -100 * points["drawdown"], 0, color="#d62728", alpha=0.5)
        bottom.set_ylabel("drawdown %")
        bottom.grid(alpha=0.3)
        return _png(fig)
    finally:
        plt.close(fig)


def shadow_curve_png(
    *,
    timestamps: np.ndarray,
    shadow_returns: np.ndarray,
    production_returns: np.ndarray,
    title: str,
    shadow_label: str = "shadow",
    production_label: str = "production",
    width: float = 9.0,
    height: float = 5.0,
) -> bytes:
    """Shadow against production on the same bars: both equity curves  above, the
    cumulative return difference (shadow minus production, percent of capital) below."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    times = timestamps.astype("datetime64[s]").astype(object)
    shadow_equity = np.cumprod(1.0 + np.asarray(shadow_returns, dtype=np.float64))
    production_equity = np.cumprod(1.0 + np.asarray(production_returns, dtype=np.float64))
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(width, height), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    try:
        top.plot(times, shadow_equity, label=shadow_label, color="#ff7f0e", linewidth=1.2)
        top.plot(times, production_equity, label=production_label, color="#1f77b4", linewidth=1.2)
        _equity_axis(top)
        top.set_ylabel("equity (start = 1)")
        top.set_title(title, fontsize=10)
        top.legend(loc="upper left", fontsize=8)
        top.grid(alpha=0.3)
        gap = 100 * np.cumsum(np.asarray(shadow_returns) - np.asarray(production_returns))
        bottom.plot(times, gap, color="#2ca02c", linewidth=1.0)
        bottom.axhline(0.0, color="#7f7f7f", linewidth=0.8)
        bottom.set_ylabel("difference %")
        bottom.grid(alpha=0.3)
        return _png(fig)
    finally:
        plt.close(fig)


COMPARE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")


def equity_curves_png(
    *,
    timestamps: np.ndarray,
    curves: dict[str, np.ndarray],
    buy_hold: np.ndarray | None,
    title: str,
    width: float = 9.0,
    height: float = 5.0,
) -> bytes:
    """Several equity curves on the same bars (versions compared), buy and hold dashed, each
    curve's drawdown in percent below."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(width, height), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    try:
        for (label, equity), colour in zip(curves.items(), COMPARE_COLOURS, strict=False):
            drawdown = 1.0 - equity / np.maximum.accumulate(equity)
            reference = buy_hold if buy_hold is not None else equity
            no_regimes = np.zeros(len(equity))
            times, equity, _, drawdown, _ = _decimate(
                timestamps, equity, reference, drawdown, no_regimes
            )
            times = times.astype("datetime64[s]").astype(object)
            top.plot(times, equity, label=label, color=colour, linewidth=1.2)
            bottom.plot(times, -100 * drawdown, color=colour, linewidth=0.9)
        if buy_hold is not None:
            zeros = np.zeros(len(buy_hold))
            times, held, _, _, _ = _decimate(timestamps, buy_hold, buy_hold, zeros, zeros)
            top.plot(times.astype("datetime64[s]").astype(object), held, label="buy and hold",
                     color="#7f7f7f", linewidth=1.0, linestyle="--")  # fmt: skip
        _equity_axis(top)
        top.set_ylabel("equity (start = 1)")
        top.set_title(title, fontsize=10)
        top.legend(loc="upper left", fontsize=8)
        top.grid(alpha=0.3)
        bottom.set_ylabel("drawdown %")
        bottom.grid(alpha=0.3)
        return _png(fig)
    finally:
        plt.close(fig)
