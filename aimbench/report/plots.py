"""Layer-curve plots with matplotlib: one figure per (task, probe), a line per backbone.

The best layer set (the one each record stored, chosen on val) is a star, the last a hollow
circle, a chosen window a bar over its blocks, so the gap the AIM paper reports between them is
the first thing the eye finds. Figures are rendered with the
non-interactive Agg backend: no display is needed on a cluster node.
"""

from __future__ import annotations

import io
import re
from collections import defaultdict
from operator import methodcaller
from pathlib import Path

from aimbench.atomic import atomic_write
from aimbench.report.curves import Curve

FORMATS = ("png", "svg")


def _figure(curves: list[Curve]):  # -> matplotlib.figure.Figure (imported lazily: matplotlib is slow to import)
    from matplotlib.figure import Figure

    first = curves[0]
    figure = Figure(figsize=(6.4, 4.0), dpi=100, layout="constrained")
    axes = figure.subplots()
    for curve in curves:
        test = [100 * v for v in curve.test]
        (line, *_) = axes.plot(curve.blocks, test, marker=".", linewidth=1.5, label=curve.label)
        color = line.get_color()
        for choice, marker in ((curve.best, "*"), (curve.last, "o")):
            if choice is None:
                continue
            filled = dict(markersize=14) if marker == "*" else dict(markersize=8, markerfacecolor="none")
            for block in choice.single_blocks():  # the stored choice, at the curve's point for that block
                axes.plot(block, test[curve.blocks.index(block)], marker=marker, color=color, linestyle="none", **filled)
            for blocks in (b for b in choice.blocks if len(b) > 1):  # a window: a bar over its blocks at its score
                axes.plot([blocks[0], blocks[-1]], [100 * choice.test] * 2, color=color, linewidth=3, alpha=0.6)
                axes.plot(blocks[-1], 100 * choice.test, marker=marker, color=color, linestyle="none", **filled)
    axes.set_xlabel("block (0-indexed)")
    axes.set_ylabel(f"test {first.metric} (%)")
    axes.set_title(f"{first.task}: {first.probe} probe per block (★ best on val, ○ last; a bar is a window)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def grouped(curves: list[Curve]) -> dict[tuple[str, str], list[Curve]]:
    groups: dict[tuple[str, str], list[Curve]] = defaultdict(list)
    for curve in curves:
        groups[(curve.task, curve.probe)].append(curve)
    return dict(groups)


def file_stem(task: str, probe: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"layers_{task}_{probe}")


def render(curves: list[Curve], fmt: str = "png") -> bytes:
    """One figure as PNG or SVG bytes (curves of one task and probe)."""
    buffer = io.BytesIO()
    _figure(curves).savefig(buffer, format=fmt, metadata={"Software": None} if fmt == "png" else {"Date": None})
    return buffer.getvalue()


def write_plots(curves: list[Curve], folder: Path, fmt: str = "png") -> list[Path]:
    """A file per (task, probe) under ``folder``; returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for (task, probe), members in grouped(curves).items():
        path = folder / f"{file_stem(task, probe)}.{fmt}"
        data = render(members, fmt)
        atomic_write(path, methodcaller("write", data))  # handle.write(data)
        written.append(path)
    return written
