"""Layer-curve plots with matplotlib: one figure per (task, probe), a line per backbone.

The best layer set (the one each record stored, chosen on val) is a star, the last a hollow
circle, a chosen window a bar over its blocks, so the gap the AIM paper reports between them is
the first thing the eye finds. Test is a solid line with its 95 % interval as a band, val a
dashed line (the gap between them is how much selecting on val costs); with ``relative`` the x
axis is (block + 1) / depth, so a 12- and a 24-block backbone share one axis. The title stays
short and the markers are explained in the legend: a long title is cut at the panel's edge. Figures are rendered with the
non-interactive Agg backend: no display is needed on a cluster node.
"""

from __future__ import annotations

import io
import re
from collections import defaultdict
from operator import methodcaller
from pathlib import Path
from typing import Any

from aimbench.atomic import atomic_write
from aimbench.report.curves import Curve

FORMATS = ("png", "svg")


def figure(curves: list[Curve], relative: bool = False):  # -> matplotlib.figure.Figure (imported lazily: matplotlib is slow to import)
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    first = curves[0]
    fig = Figure(figsize=(6.4, 4.0), dpi=100, layout="constrained")
    axes = fig.subplots()
    for curve in curves:
        x = curve.x(relative)
        test = [100 * v for v in curve.test]
        (line, *_) = axes.plot(x, test, marker=".", linewidth=1.5, label=curve.label)
        color = line.get_color()
        axes.plot(x, [100 * v for v in curve.val], linestyle="--", linewidth=1.0, color=color, alpha=0.6)
        banded = [i for i in range(len(x)) if curve.bounds(i) is not None]
        if banded:
            axes.fill_between([x[i] for i in banded], [100 * curve.low[i] for i in banded], [100 * curve.high[i] for i in banded],  # type: ignore[operator]
                              color=color, alpha=0.15, linewidth=0)  # fmt: skip
        _mark_choices(axes, curve, x, test, color, relative)
    axes.set_xlabel("relative depth (block + 1) / depth" if relative else "block (0-indexed)")
    axes.set_ylabel(f"{first.metric} (%)")
    axes.set_title(f"{first.task}: {first.probe} probe per block", fontsize="medium")  # short: it must fit the panel
    axes.grid(alpha=0.3)
    keys = [Line2D([], [], color="gray", label="test"), Line2D([], [], color="gray", linestyle="--", label="val"),
            Patch(color="gray", alpha=0.15, label="test 95% interval"),
            Line2D([], [], color="gray", marker="*", markersize=10, linestyle="none", label="best (on val)"),
            Line2D([], [], color="gray", marker="o", markerfacecolor="none", linestyle="none", label="last"),
            Line2D([], [], color="gray", linewidth=3, alpha=0.6, label="a window")]  # fmt: skip
    axes.legend(handles=[*axes.get_legend_handles_labels()[0], *keys], fontsize="x-small")
    return fig


def _mark_choices(axes, curve: Curve, x: list[float], test: list[float], color: Any, relative: bool) -> None:
    """The stored best (★) and last (○) choices: at the curve's point for a block, as a bar over a window."""
    position = dict(zip(curve.blocks, x))

    def at(block: int) -> float:
        return position.get(block, (block + 1) / curve.depth if relative and curve.depth else float(block))

    for choice, marker in ((curve.best, "*"), (curve.last, "o")):
        if choice is None:
            continue
        filled = dict(markersize=14) if marker == "*" else dict(markersize=8, markerfacecolor="none")
        for block in choice.single_blocks():
            axes.plot(at(block), test[curve.blocks.index(block)], marker=marker, color=color, linestyle="none", **filled)
        for blocks in (b for b in choice.blocks if len(b) > 1):  # a window: a bar over its blocks at its score
            axes.plot([at(blocks[0]), at(blocks[-1])], [100 * choice.test] * 2, color=color, linewidth=3, alpha=0.6)
            axes.plot(at(blocks[-1]), 100 * choice.test, marker=marker, color=color, linestyle="none", **filled)


def grouped(curves: list[Curve]) -> dict[tuple[str, str], list[Curve]]:
    groups: dict[tuple[str, str], list[Curve]] = defaultdict(list)
    for curve in curves:
        groups[(curve.task, curve.probe)].append(curve)
    return dict(groups)


def file_stem(task: str, probe: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"layers_{task}_{probe}")


def render(curves: list[Curve], fmt: str = "png", relative: bool = False) -> bytes:
    """One figure as PNG or SVG bytes (curves of one task and probe)."""
    buffer = io.BytesIO()
    figure(curves, relative).savefig(buffer, format=fmt, metadata={"Software": None} if fmt == "png" else {"Date": None})
    return buffer.getvalue()


def write_plots(curves: list[Curve], folder: Path, fmt: str = "png", relative: bool = False) -> list[Path]:
    """A file per (task, probe) under ``folder``; returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for (task, probe), members in grouped(curves).items():
        path = folder / f"{file_stem(task, probe)}.{fmt}"
        data = render(members, fmt, relative)
        atomic_write(path, methodcaller("write", data))  # handle.write(data)
        written.append(path)
    return written
