"""Pictures of an evaluation: equity against buy and hold, drawdown below (matplotlib, PNG)."""

from __future__ import annotations

import io

import numpy as np


def equity_curve_png(
    *,
    timestamps: np.ndarray,
    equity: np.ndarray,
    buy_hold: np.ndarray,
    title: str,
    width: float = 9.0,
    height: float = 5.0,
) -> bytes:
    """Two stacked panels sharing time: equity vs buy and hold (log scale), drawdown in percent."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    times = timestamps.astype("datetime64[s]").astype(object)
    drawdown = 1.0 - equity / np.maximum.accumulate(equity)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(width, height), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    try:
        top.plot(times, equity, label="strategy", color="#1f77b4", linewidth=1.2)
        top.plot(times, buy_hold, label="buy and hold", color="#7f7f7f", linewidth=1.0, alpha=0.8)
        top.set_yscale("log")
        top.set_ylabel("equity (start = 1)")
        top.set_title(title, fontsize=10)
        top.legend(loc="upper left", fontsize=8)
        top.grid(alpha=0.3)
        bottom.fill_between(times, -100 * drawdown, 0, color="#d62728", alpha=0.5)
        bottom.set_ylabel("drawdown %")
        bottom.grid(alpha=0.3)
        fig.autofmt_xdate()
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90)
    finally:
        plt.close(fig)
    return buffer.getvalue()
