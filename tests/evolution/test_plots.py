"""The Pareto front picture: all three objectives, every front in a legend outside the data."""

from __future__ import annotations

import numpy as np
import pytest

from evolution.plots import PROFIT_FACTOR_CAP, front_figure, front_picture, profit_factor_of


def _point(sharpe: float, drawdown: float, pf: float | None, **extra) -> dict:
    return {"sharpe": sharpe, "max_drawdown": drawdown, "profit_factor": pf, "feasible": True,
            **extra}  # fmt: skip


@pytest.fixture
def figure():
    # A legend inside the axes would sit on this cloud of points in every corner.
    rng = np.random.default_rng(0)
    points = [_point(float(s), float(d), float(p)) for s, d, p in rng.uniform(0.05, 3, (60, 3))]
    front = [_point(3.0, 0.05, 1.2), _point(2.0, 0.04, None, profit_factor_infinite=True)]
    earlier = [[_point(1.0, 0.2, 1.1)], [_point(1.5, 0.1, 1.3)], [_point(2.0, 0.08, 1.5)]]
    fig = front_figure(points=points, front=front, earlier_fronts=earlier, title="t")
    fig.canvas.draw()
    return fig


def test_every_front_has_a_legend_entry(figure):
    axes = figure.axes[0]
    labels = [t.get_text() for t in axes.get_legend().get_texts()]
    assert labels == [
        "front after generation 1", "front after generation 2", "front after generation 3",
        "candidate", "Pareto front (rank 1 on all three)",
    ]  # fmt: skip


def test_the_legend_is_outside_the_data(figure):
    axes = figure.axes[0]
    renderer = figure.canvas.get_renderer()
    legend = axes.get_legend().get_window_extent(renderer)
    assert not legend.overlaps(axes.get_window_extent(renderer))
    assert legend.y1 <= axes.get_window_extent(renderer).y0


def test_profit_factor_is_the_colour(figure):
    colourbar_axes = figure.axes[1]
    assert colourbar_axes.get_ylabel().startswith("profit factor")
    front = figure.axes[0].collections[-1]
    assert list(front.get_array()) == [1.2, PROFIT_FACTOR_CAP]  # infinite at the cap
    assert profit_factor_of({"profit_factor": 25.0}) == PROFIT_FACTOR_CAP
    assert profit_factor_of({"profit_factor": None}) is None


def test_pictures_render_as_png_and_svg():
    png = front_picture(points=[], front=[], title="empty")
    svg = front_picture(points=[_point(1, 0.1, 1.4)], front=[], title="t", fmt="svg")
    assert png.startswith(b"\x89PNG") and b"<svg" in svg
    with pytest.raises(ValueError, match="unknown picture format"):
        front_picture(points=[], front=[], title="t", fmt="gif")
