"""The backbone contract every family adapter implements.

A backbone is a frozen network plus the facts needed to trust its features: the preprocessing
of its weights, its depth/width/heads, where the weights came from (id and SHA-256), and the
provenance of each feature tensor (which block, raw residual stream or normed, which tokens).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchvision.transforms import InterpolationMode, v2

from aimbench.cards.backbone_card import BackboneSpec, Preprocess
from aimbench.dtypes import torch_dtype


@dataclass(frozen=True)
class LayerTokens:
    """One block's output for a batch.

    ``patches`` is (B, N, D); ``prefix`` is (B, P, D) for the cls/register tokens named by the
    backbone's ``prefix_layout``, or None when the family has no prefix tokens.
    """

    layer: int
    patches: torch.Tensor
    prefix: torch.Tensor | None


@dataclass(frozen=True)
class FeatureProvenance:
    """Where every feature tensor of this backbone comes from, recorded with each result."""

    source: str  # e.g. "block output (residual stream)"
    norm_applied: bool
    prefix_layout: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "norm_applied": self.norm_applied,
            "prefix_layout": list(self.prefix_layout),
        }


@dataclass(frozen=True)
class WeightsInfo:
    """What weights were loaded: an id a human can read and a hash a machine can check."""

    id: str
    sha256: str


def build_eval_transform(pre: Preprocess) -> v2.Compose:
    """Resize (short side, or squash), centre-crop, scale to [0, 1], normalise; any input is made RGB."""
    return v2.Compose(
        [
            v2.Lambda(lambda image: image.convert("RGB")),
            v2.PILToTensor(),
            v2.Resize(
                (pre.resize_size, pre.resize_size) if pre.resize_mode == "squash" else pre.resize_size,
                interpolation=InterpolationMode(pre.interpolation),
                antialias=True,
            ),
            v2.CenterCrop(pre.image_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(pre.mean), std=list(pre.std)),
        ]
    )


class Backbone(ABC):
    """A frozen vision backbone that returns per-layer tokens in one forward pass."""

    def __init__(self, spec: BackboneSpec, model: nn.Module, weights: WeightsInfo, dtype: str = "fp32") -> None:
        self.spec = spec
        self.dtype = dtype
        self.model = model.to(torch_dtype(dtype)).eval().requires_grad_(False)
        self.weights = weights
        self.device = torch.device("cpu")
        self._patch_tokens: int | None = None

    @property
    def depth(self) -> int:
        return self.spec.depth

    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def heads(self) -> int:
        return self.spec.heads

    @property
    def preprocess(self) -> Preprocess:
        return self.spec.preprocess

    @property
    def has_cls_token(self) -> bool:
        return self.spec.cls_token

    def transform(self) -> v2.Compose:
        return build_eval_transform(self.spec.preprocess)

    def to(self, device: torch.device | str) -> Backbone:
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def patch_tokens(self) -> int:
        """Patch tokens per image at the card's resolution, from one forward of a blank image to
        the first block, once (memory planning and token caches need it)."""
        if self._patch_tokens is None:
            size = self.preprocess.image_size
            with torch.inference_mode():
                self._patch_tokens = self.forward_layers(torch.zeros(1, 3, size, size), [0])[0].patches.shape[1]
        return self._patch_tokens

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Images on the model's device and in its precision."""
        return images.to(self.device, torch_dtype(self.dtype))

    def checked_layers(self, layers: Sequence[int]) -> list[int]:
        """``layers`` as a list, or ValueError unless sorted, unique and within the depth."""
        layers = list(layers)
        if layers != sorted(set(layers)) or not layers or layers[0] < 0 or layers[-1] >= self.depth:
            raise ValueError(f"layers must be sorted, unique and within 0..{self.depth - 1}: {layers}")
        return layers

    @property
    def provenance(self) -> FeatureProvenance:
        """How the tensors from :meth:`forward_layers` were taken from the network: by default raw
        block outputs (the residual stream, no final norm), as the AIM protocol reads them."""
        return FeatureProvenance("block output (residual stream)", False, self.spec.prefix_layout)

    @abstractmethod
    def forward_layers(self, images: torch.Tensor, layers: Sequence[int]) -> list[LayerTokens]:
        """Run the network once and return the outputs of ``layers`` (0-indexed blocks).

        ``layers`` must be sorted and unique; the result has one entry per layer, in order.
        """
