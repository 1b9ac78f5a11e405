"""Like with like: which measured number a published number is compared with, and why not.

A paper number was measured with one probe kind on one layer window of the full test split. A Δ
(measured − paper) is printed only for a measured setup that used the same probe kind, probed
exactly the same blocks and ran without ``--limit``; anything else would compare, say, block 23
alone with the paper's mean of blocks 18-23. The paper row is always shown; where no Δ is, the
table's notes say why.

The paper's window: the ``blocks`` column of the published file where the paper names a layer
number (AIM-7B "layer 20" = blocks 14-19), else the card's window named by ``layer`` as the
measured record stored it (``backbone_info.windows``), else, for ``last`` on a card without
windows, the final block. A record that does not say which windows its card had (written before
they were recorded) is matched only through a layer set it named ``last=...`` or ``best=...``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aimbench.report.intervals import Bounds
from aimbench.report.setups import Setup

COMPARABLE_PROBES = {"attentive": ("attentive", "official")}  # paper probe -> measured kinds ("official:last" is "official")


@dataclass(frozen=True)
class LayerScore:
    """One layer set of one setup on one task, seeds averaged."""

    layer_set: str
    blocks: tuple[int, ...]
    test_score: float
    low: float | None = None  # its stored 95% interval (one seed only; None: several seeds, or none recorded)
    high: float | None = None


@dataclass
class Paper:
    """One published row: a model at one layer choice over several tasks."""

    model: str
    backbone: str  # the aimbench card it is matched to ("" for none)
    probe: str
    layer: str  # last | best | a layer number as printed
    blocks: str  # "A-B" or "" (the card's window named by layer)
    cells: dict[str, float] = field(default_factory=dict)  # task -> score

    @property
    def layer_label(self) -> str:
        return f"layer {self.layer}" if self.layer.isdigit() else f"{self.layer} layer"

    def window(self, layers: Sequence[LayerScore], card: CardWindows) -> tuple[int, ...] | None:
        """The blocks this number was measured on, in the terms of a measured setup."""
        if self.blocks:
            first, _, last = self.blocks.partition("-")
            return tuple(range(int(first), int(last or first) + 1))
        if card.windows is not None:
            if self.layer in card.windows:
                return tuple(card.windows[self.layer])
            return (card.depth - 1,) if self.layer == "last" and card.depth else None
        return next((s.blocks for s in layers if s.layer_set.startswith(f"{self.layer}=")), None)


@dataclass(frozen=True)
class CardWindows:
    """What a setup's records say about its card: depth and named windows (None: not recorded)."""

    depth: int | None = None
    windows: dict[str, list[int]] | None = None


@dataclass
class Comparison:
    """A measured setup's score on a paper's window, per task, and the Δ against the paper."""

    setup: Setup
    paper: Paper
    window: tuple[int, ...]
    measured: dict[str, float]  # task -> test score on the window
    bounds: dict[str, Bounds] = field(default_factory=dict)  # task -> its interval, where stored

    @property
    def window_label(self) -> str:
        w = self.window
        return f"L{w[0]}" if len(w) == 1 else f"avg:{w[0]}-{w[-1]}"

    def deltas(self) -> dict[str, float]:
        return {t: score - self.paper.cells[t] for t, score in self.measured.items() if t in self.paper.cells}


def compare(
    setups: Sequence[Setup],
    papers: Sequence[Paper],
    layers: dict[tuple[Setup, str], list[LayerScore]],
    cards: dict[Setup, CardWindows],
    label: Callable[[Setup], str],
) -> tuple[list[Comparison], list[str]]:
    """Every comparable (setup, paper row) pair, and one note per reason a matched pair has no Δ;
    ``label`` names a setup in the notes as the table does."""
    comparisons, reasons = [], defaultdict(list)
    for paper in papers:
        for setup in (s for s in setups if s.backbone == paper.backbone and paper.backbone):
            kind = setup.probe.split(":")[0]
            if kind not in COMPARABLE_PROBES.get(paper.probe, (paper.probe,)):
                reasons[f"the paper's numbers are {paper.probe} probes"].append(f"{setup.backbone} {label(setup)}")
                continue
            if setup.limited:
                reasons["measured on a --limit subset, not the full test split"].append(f"{setup.backbone} {label(setup)}")
                continue
            card = cards.get(setup, CardWindows())
            measured, bounds, window = {}, {}, None
            for task in paper.cells:
                scores = layers.get((setup, task), [])
                window = paper.window(scores, card)
                hit = next((s for s in scores if window is not None and s.blocks == window), None)
                if hit is not None:
                    measured[task] = hit.test_score
                    if hit.low is not None and hit.high is not None:
                        bounds[task] = Bounds(hit.low, hit.high)
            if not measured or window is None:
                if kind != "official":  # a released head reads one window by construction
                    add = f"avg:{paper.blocks}" if paper.blocks else paper.layer
                    blocks = f" ({paper.blocks})" if paper.blocks else ""
                    reasons[f"the paper's window was not probed (add --layers {add})"].append(
                        f"{setup.backbone} {label(setup)} vs {paper.model} {paper.layer_label}{blocks}"
                    )
                continue
            comparisons.append(Comparison(setup, paper, window, measured, bounds))
    notes = [f"no Δ for {', '.join(dict.fromkeys(who))}: {why}" for why, who in reasons.items()]
    return comparisons, notes
