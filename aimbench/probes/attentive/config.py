"""The attentive probe's recipe: AIM's attentive pooling heads on patch tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aimbench.probes.config import TrainedProbeConfig


@dataclass(frozen=True, kw_only=True)
class AttentiveProbeConfig(TrainedProbeConfig):
    """AIM's attentive probe heads, one per (layer set x lr x wd), trained online on augmented
    views with the frozen backbone run once per batch for all of them (``data_mode = "cached"``:
    on token maps extracted once). ``no_weight_decay`` names Apple's head parameters (cls_token,
    k.weight, v.weight, linear.weight, linear.bias)."""

    micro_batch: int = 64  # heads run forward/backward on this many images at a time (memory, not a recipe field)

    kind = "attentive"

    def as_dict(self) -> dict[str, Any]:
        return {
            **super().as_dict(),
            "head": "BatchNorm1d(affine=False) over tokens, one unprojected query, bias-free k/v, trunk heads, linear",
            "tokens": "patch tokens; a window is the mean of its raw block outputs",
            "data": (
                "online: augmented views, backbone (in the cell's dtype) under inference mode each step"
                if self.data_mode == "online"
                else "cached: eval-crop patch-token maps in fp16, extracted once and reused by every epoch"
            )
            + "; heads trained in bf16 autocast on GPU, val and test scored in fp32",
            "selection": "per layer set: best val score over lr x wd; test scored for selected heads only",
        }
