"""Equity pictures: the log axis carries readable labels, compared curves share one window."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from training.evaluation.plots import _equity_axis, equity_curve_png, equity_curves_png


def _labels(low: float, high: float) -> list[str]:
    figure = Figure()
    axes = figure.add_subplot()
    axes.plot(np.arange(100), np.geomspace(low, high, 100))
    _equity_axis(axes)
    axes.set_ylim(low, high)
    figure.canvas.draw()
    formatter = axes.yaxis.get_major_formatter()
    shown = [y for y in axes.yaxis.get_majorticklocs() if low <= y <= high]
    return [formatter(y) for y in shown]


def test_a_log_axis_has_a_few_plain_labels_whatever_the_span():
    assert _labels(0.9, 3.5) == ["1", "1.25", "1.5", "2", "2.5", "3"]
    assert _labels(0.9, 8.0) == ["1", "2", "3", "5"]
    assert _labels(0.3, 4.0) == ["0.3", "0.5", "1", "2", "3"]
    assert _labels(1.0, 60.0) == ["1", "2", "5", "10", "20", "50"]


def test_pictures_are_pngs():
    t = np.arange("2026-01-01T00", "2026-01-21T00", dtype="datetime64[h]").astype("datetime64[s]")
    rising = np.geomspace(1.0, 5.0, len(t))
    single = equity_curve_png(timestamps=t, equity=rising, buy_hold=rising[::-1], title="one")
    several = equity_curves_png(
        timestamps=t, curves={"v1": rising, "v2": np.sqrt(rising)}, buy_hold=rising, title="two"
    )
    assert single.startswith(b"\x89PNG") and several.startswith(b"\x89PNG")
    assert len(several) > 10_000
