"""What a probe run produces, and the one selection rule every probe kind shares.

Heads are listed in grid order: layer set, then token kind (patch mean, cls, both
concatenated), then the probe's own hyper-parameters in the order of its config. For every layer
set the head with the best *val* score is selected, ties going to the first in grid order; only
selected heads are ever scored on test. The best layer set is the one with the best val score
(ties: the first given); "last" is the set that reaches deepest (ties: the first given).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from aimbench.probes.features.layer_sets import LayerSet

if TYPE_CHECKING:  # records and reports import this module; torch is only needed where probes run
    import torch


def as_predictions(values: np.ndarray | torch.Tensor) -> np.ndarray:
    """Class predictions of one head, (N,) or (1, N), as a tensor on any device or an array: one (N,) int64 array on the CPU."""
    array = values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)
    return array.reshape(-1).astype(np.int64, copy=False)


@dataclass(frozen=True)
class HeadScore:
    """One head and its val score (test is never computed for unselected heads)."""

    layer_set: str
    token: str
    hparams: dict[str, float]
    val_score: float
    stopped_at: float | None = None  # share of the schedule after which successive halving stopped it (None: trained to the end)


@dataclass(frozen=True, kw_only=True)
class LayerResult:
    """The val-selected head of one layer set with its val and test scores; ``hparams`` is None
    for heads that were not trained or selected here (released heads)."""

    layer_set: str
    blocks: tuple[int, ...]
    token: str
    hparams: dict[str, float] | None
    val_score: float
    test_score: float
    test_secondary: dict[str, float] = field(default_factory=dict)  # the task card's secondary metrics on test
    test_interval: tuple[float, float] | None = None  # 95 % interval on test_score, set by the store when the cell finishes
    # the head's class for each test example, in test-split order: kept in a sidecar file, never in the record's JSON
    test_predictions: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.test_predictions is not None:  # a (1, N) or (N,) tensor on any device, from any probe kind: one (N,) int64 array
            object.__setattr__(self, "test_predictions", as_predictions(self.test_predictions))

    @classmethod
    def selected(
        cls, layer_set: LayerSet, head: HeadScore, test_score: float, test_secondary: dict[str, float],
        test_predictions: np.ndarray | torch.Tensor | None = None,
    ) -> LayerResult:  # fmt: skip
        """The result of ``layer_set``: its val-selected ``head``, scored on test, with what it predicted there."""
        predictions = None if test_predictions is None else as_predictions(test_predictions)
        return cls(layer_set=layer_set.name, blocks=layer_set.blocks, token=head.token, hparams=head.hparams, val_score=head.val_score,
                   test_score=test_score, test_secondary=test_secondary, test_predictions=predictions)  # fmt: skip

    @property
    def layer(self) -> int:
        """The deepest block the set reads: how reports order and label layer sets."""
        return self.blocks[-1]

    def as_record(self) -> dict[str, Any]:
        interval = None if self.test_interval is None else {"low": self.test_interval[0], "high": self.test_interval[1]}
        return {
            "layer_set": self.layer_set, "blocks": list(self.blocks), "layer": self.layer, "token": self.token,
            "hparams": self.hparams, "val_score": self.val_score, "test_score": self.test_score,
            "test_secondary": self.test_secondary, "test_interval": interval,
        }  # fmt: skip

    @classmethod
    def from_record(cls, entry: dict[str, Any]) -> LayerResult:
        """The inverse of :meth:`as_record` (one entry of a record's ``layers``)."""
        interval = entry.get("test_interval")
        return cls(layer_set=entry["layer_set"], blocks=tuple(entry["blocks"]), token=entry["token"], hparams=entry["hparams"],
                   val_score=entry["val_score"], test_score=entry["test_score"], test_secondary=entry.get("test_secondary") or {},
                   test_interval=None if interval is None else (interval["low"], interval["high"]))  # fmt: skip


@dataclass(frozen=True)
class ProbeResult:
    heads: list[HeadScore]
    layers: list[LayerResult]
    best: LayerResult
    last: LayerResult

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ProbeResult:
        """The probe result a run record holds: its heads, every layer set's selected head, the best and the last."""
        layers = [LayerResult.from_record(entry) for entry in record["layers"]]
        by_name = {layer.layer_set: layer for layer in layers}
        heads = [HeadScore(**head) for head in record["heads"]]
        return cls(heads, layers, by_name[record["best_layer_set"]], by_name[record["last_layer_set"]])


def select_per_set(heads: Sequence[HeadScore], sets: Sequence[LayerSet]) -> list[int]:
    """For each layer set (in order), the index into ``heads`` of its val-best head."""
    chosen = []
    for layer_set in sets:
        best = None
        for i, head in enumerate(heads):
            if head.layer_set != layer_set.name or head.stopped_at is not None:  # only heads trained to the end are selected
                continue
            if best is None or head.val_score > heads[best].val_score:
                best = i
        if best is None:
            raise ValueError(f"no head was trained for layer set '{layer_set.name}'")
        chosen.append(best)
    return chosen


def summarise(heads: list[HeadScore], layers: list[LayerResult]) -> ProbeResult:
    best = max(layers, key=lambda r: r.val_score)  # max keeps the first of equal scores
    deepest = max(r.layer for r in layers)
    last = next(r for r in layers if r.layer == deepest)
    return ProbeResult(heads=heads, layers=layers, best=best, last=last)
