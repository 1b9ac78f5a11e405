"""The attentive probe's recipe: AIM's attentive pooling heads on patch tokens."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from aimbench.errors import UserError
from aimbench.probes.config import TrainedProbeConfig, scaled_lr
from aimbench.probes.features.view_recipe import ViewRecipe


@dataclass(frozen=True, kw_only=True)
class AttentiveProbeConfig(TrainedProbeConfig):
    """AIM's attentive probe heads, one per (layer set x lr x wd), trained online on augmented
    views with the frozen backbone run once per batch for all of them (``data_mode = "cached"``:
    on token maps extracted once). ``no_weight_decay`` names Apple's head parameters (cls_token,
    k.weight, v.weight, linear.weight, linear.bias). Beyond the shared fields: AdamW's ``betas``,
    the ``min_lr`` the cosine ends at, and how training views are drawn (:class:`ViewRecipe`)."""

    betas: tuple[float, float]
    min_lr: float  # absolute: not scaled with the batch, as timm's lr_min
    crop_ratio: tuple[float, float]
    interpolation: str
    flip_prob: float
    rand_augment: str
    color_jitter: float | None
    random_erasing: float
    micro_batch: int = 64  # heads run forward/backward on this many images at a time (memory, not a recipe field)

    kind = "attentive"
    # added with aim-v2, at what earlier records trained with: torch's AdamW betas, a cosine to 0, the default views
    ADDED_FIELDS: ClassVar[dict[str, Any]] = {"betas": (0.9, 0.999), "min_lr": 0.0, **asdict(ViewRecipe())}

    def __post_init__(self) -> None:
        super().__post_init__()
        lowest = min(scaled_lr(lr, self) for lr in self.learning_rates)
        if self.min_lr >= lowest:
            raise UserError(f"attentive probe: min_lr {self.min_lr:g} is not below the lowest scaled learning rate {lowest:g}")

    @property
    def views(self) -> ViewRecipe:
        """How training views are drawn (online data only)."""
        return ViewRecipe(**{name: getattr(self, name) for name in asdict(ViewRecipe())})

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
