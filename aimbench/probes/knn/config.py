"""The kNN probe's recipe: weighted cosine kNN (DINO's protocol) on cached pooled features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aimbench.probes.config import ProbeConfig


@dataclass(frozen=True, kw_only=True)
class KnnProbeConfig(ProbeConfig):
    """Weighted cosine kNN on the cached pooled features; one head per k."""

    ks: tuple[int, ...]
    temperature: float

    kind = "knn"

    def as_dict(self) -> dict[str, Any]:
        return {
            **super().as_dict(),
            "metric": "cosine",
            "weighting": "exp(similarity / temperature)",
            "features": "cached fp16 pooled block outputs, L2-normalised; a window is the mean of its blocks",
            "selection": "per layer set: best val score over token kind x k; test scored for selected heads only",
        }
