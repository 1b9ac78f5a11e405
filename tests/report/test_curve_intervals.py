"""Layer curves with intervals: blocks tied with the best, sparklines on one scale per task, and
plots with val, a test band, a relative-depth axis and a title that fits its panel."""

from __future__ import annotations

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from aimbench.report.curves import Choice, Curve, curves_table
from aimbench.report.plots import figure
from aimbench.report.setups import Setup

SETUP = Setup(backbone="vit", weights_key="", probe="linear", protocol="dinov2-linear", layers_spec="all", image_limit=None, dtype="fp32")


def curve(
    backbone: str, test: list[float], half: float | None = 0.02, best: int = 2, depth: int = 4, task: str = "a-long-task-name"
) -> Curve:
    blocks = list(range(len(test)))
    low = [None if half is None else t - half for t in test]
    high = [None if half is None else t + half for t in test]
    choice = Choice((str(best),), ((best,),), test[best])
    last = Choice((str(blocks[-1]),), ((blocks[-1],),), test[-1])
    setup = Setup(**{**SETUP.__dict__, "backbone": backbone})
    return Curve(
        setup, task, "top1", blocks, [t + 0.05 for t in test], test, low, high, seeds=1, depth=depth, n_test=500, best=choice, last=last
    )


def test_blocks_tied_with_the_best_are_those_its_interval_cannot_separate() -> None:
    c = curve("vit", [0.40, 0.60, 0.63, 0.61])
    assert c.tied_with_best() == [3]  # 2 points from the best: under sqrt(2) * 2 = 2.83 points; block 1, 3 points below, is apart
    assert curve("vit", [0.40, 0.60, 0.63, 0.61], half=None).tied_with_best() is None  # no intervals: cannot tell
    table = curves_table([c])
    assert table.rows[0][5] == "L2: 63.0 ±2.0" and table.rows[0][6] == "L3"


def test_sparklines_of_one_task_share_a_scale() -> None:
    high, low = curve("high", [0.80, 0.85, 0.90, 0.88]), curve("low", [0.40, 0.45, 0.50, 0.48])
    table = curves_table([high, low])
    assert table.rows[0][4] == "▇▇██" and table.rows[1][4] == "▁▂▂▂"  # one scale, 40..90 %: the weaker curve sits lower
    assert any("one scale per task" in note for note in table.notes)


def test_plots_show_val_a_test_band_and_a_relative_depth_axis_under_a_title_that_fits() -> None:
    shallow, deep = curve("vit-12", [0.5, 0.6, 0.7, 0.65]), curve("vit-24", [0.4, 0.5, 0.6, 0.7, 0.72, 0.71, 0.7, 0.69], depth=8)
    fig = figure([shallow, deep], relative=True)
    axes = fig.axes[0]
    test_lines = [line for line in axes.get_lines() if line.get_label() in ("vit-12", "vit-24")]
    assert [list(line.get_xdata()) for line in test_lines] == [
        pytest.approx([0.25, 0.5, 0.75, 1.0]), pytest.approx([(b + 1) / 8 for b in range(8)])]  # fmt: skip
    assert len(axes.collections) == 2  # one 95% band per curve
    assert sum(line.get_linestyle() == "--" for line in axes.get_lines()) >= 2  # val, dashed, per curve
    assert "relative depth" in axes.get_xlabel()
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # lay the figure out as savefig does
    renderer = canvas.get_renderer()
    title, panel = axes.title.get_window_extent(renderer), fig.bbox
    assert panel.x0 <= title.x0 and title.x1 <= panel.x1, "the plot's title is cut at the panel's edge"
    legend = axes.get_legend().get_window_extent(renderer)
    assert panel.x0 <= legend.x0 and legend.x1 <= panel.x1
    blocks = figure([shallow]).axes[0]
    assert list(blocks.get_lines()[0].get_xdata()) == [0, 1, 2, 3] and blocks.get_xlabel() == "block (0-indexed)"
