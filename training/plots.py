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
    from matplotlib.ticker import ScalarFormatter

    times = timestamps.astype("datetime64[s]").astype(object)
    drawdown = 1.0 - equity / np.maximum.accumulate(equity)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(width, height), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    try:
        top.plot(times, equity, label="strategy", color="#1f77b4", linewidth=1.2)
        top.plot(times, buy_hold, label="buy and hold", color="#7f7f7f", linewidth=1.0, alpha=0.8)
        top.set_yscale("log")
        # Plain numbers on the log axis (1.05, not 1.05x10^0).
        top.yaxis.set_major_formatter(ScalarFormatter())
        top.yaxis.set_minor_formatter(ScalarFormatter())
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
    """Shadow against production on the same bars: both equity curves (log scale) above, the
    cumulative return difference (shadow minus production, percent of capital) below."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    times = timestamps.astype("datetime64[s]").astype(object)
    shadow_equity = np.cumprod(1.0 + np.asarray(shadow_returns, dtype=np.float64))
    production_equity = np.cumprod(1.0 + np.asarray(production_returns, dtype=np.float64))
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(width, height), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    try:
        top.plot(times, shadow_equity, label=shadow_label, color="#ff7f0e", linewidth=1.2)
        top.plot(times, production_equity, label=production_label, color="#1f77b4", linewidth=1.2)
        top.set_yscale("log")
        # Plain numbers on the log axis (1.05, not 1.05x10^0).
        top.yaxis.set_major_formatter(ScalarFormatter())
        top.yaxis.set_minor_formatter(ScalarFormatter())
        top.set_ylabel("equity (start = 1)")
        top.set_title(title, fontsize=10)
        top.legend(loc="upper left", fontsize=8)
        top.grid(alpha=0.3)
        gap = 100 * np.cumsum(np.asarray(shadow_returns) - np.asarray(production_returns))
        bottom.plot(times, gap, color="#2ca02c", linewidth=1.0)
        bottom.axhline(0.0, color="#7f7f7f", linewidth=0.8)
        bottom.set_ylabel("difference %")
        bottom.grid(alpha=0.3)
        fig.autofmt_xdate()
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90)
    finally:
        plt.close(fig)
    return buffer.getvalue()
