"""The backbone contract every family adapter implements.

A backbone is a frozen network plus the facts needed to trust its features: the preprocessing
of its weights, its depth/width/heads, where the weights came from (id and SHA-256), and the
provenance of each feature tensor (which block, raw residual stream or normed, which tokens).

The user-facing call, :meth:`Backbone.forward_layers`, lives here once: it resolves block
selections (negative indices, ``"last"``, ``"all"``), checks tensors and preprocesses PIL inputs
for every family, and each family implements only :meth:`Backbone._forward_blocks` on a
preprocessed tensor of the card's size.
"""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch
from PIL import Image
from torch import nn
from torchvision.transforms import InterpolationMode, v2

from aimbench.cards.backbone_card import BackboneSpec, Preprocess
from aimbench.dtypes import torch_dtype
from aimbench.errors import UserError

# What forward_layers accepts: a block index (negative counts from the end), "last", "all", or several.
Blocks = Union[int, str, Iterable[Union[int, str]]]
# A preprocessed (B, 3, H, W) float tensor, or PIL images the backbone preprocesses itself.
Images = Union[torch.Tensor, Image.Image, Sequence[Image.Image]]
BLOCK_NAMES = ("last", "all")


def describe_tensor(tensor: torch.Tensor) -> str:
    """``(2, 196, 384) float32 cpu``: what a reader needs of a tensor, never its values."""
    return f"{tuple(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')} {tensor.device}"


@dataclass(frozen=True, repr=False)
class LayerTokens:
    """One block's output for a batch, split into the tokens a probe reads.

    ``layer`` is the block's 0-based index (never negative: ``-1`` is resolved to ``depth - 1``).
    ``patches`` is (B, N, D): one token per image patch in raster order (N = grid height x grid
    width at the card's resolution, D = the backbone's ``dim``); probes pool or attend over them.
    ``prefix`` is (B, P, D): the tokens the network prepends to the patches (cls, registers), in
    the order of the backbone's ``provenance.prefix_layout``, or None when the family has none;
    kept apart because their meaning differs per family (MAE's cls token is untrained, AIM has
    none), so a probe reads them only when the card says so. Both are taken where
    ``Backbone.provenance`` says (by default the raw block output, no final norm), in the
    backbone's dtype and on its device.
    """

    layer: int
    patches: torch.Tensor
    prefix: torch.Tensor | None

    def __repr__(self) -> str:
        """Shapes, dtype and device, not values: a notebook cell showing ``forward_layers``' result
        must stay readable (the dataclass default printed every token of every block)."""
        prefix = None if self.prefix is None else tuple(self.prefix.shape)
        return f"LayerTokens(layer={self.layer}, patches={describe_tensor(self.patches)}, prefix={prefix})"


class BlockTokens(Mapping[int, LayerTokens]):
    """What :meth:`Backbone.forward_layers` returns: each block's :class:`LayerTokens` once, in the
    order asked, looked up by block however the caller named it.

    Iteration, ``keys()``, ``len()`` and ``values()`` see each resolved block once (non-negative
    indices, first mention wins: ``[4, -1, 0]`` on a 6-block model gives ``4, 5, 0``). Look-ups also
    accept what resolved to a block, so ``out[-1]``, ``out["last"]`` and ``out[5]`` are the same
    tokens there and ``-1 in out`` holds; a block that was not asked for is a ``KeyError``.
    """

    def __init__(self, tokens: Iterable[LayerTokens], depth: int) -> None:
        self._tokens = {layer_tokens.layer: layer_tokens for layer_tokens in tokens}
        self._depth = depth

    def _block(self, key: object) -> int | None:
        """The block ``key`` names (``-1`` and ``"last"`` resolved as :meth:`Backbone.resolve_blocks` does), or None."""
        if key == "last":
            return self._depth - 1
        if isinstance(key, (bool, str)):
            return None
        try:
            index = operator.index(key)  # type: ignore[arg-type]
        except TypeError:
            return None
        return index + self._depth if -self._depth <= index < 0 else index

    def __getitem__(self, key: int | str) -> LayerTokens:
        block = self._block(key)
        if block is None or block not in self._tokens:
            raise KeyError(f"block {key!r} was not asked for; this result holds blocks {list(self._tokens)}")
        return self._tokens[block]

    def __iter__(self) -> Iterator[int]:
        return iter(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def __repr__(self) -> str:
        return "BlockTokens({" + ", ".join(f"{block}: {tokens!r}" for block, tokens in self._tokens.items()) + "})"


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
        """The card's eval preprocessing: any PIL image -> normalised float32 tensor (3, S, S).

        Resize, centre crop, mean/std exactly as the weights were trained with (the card's
        ``[preprocess]``), because features of images prepared any other way are not the ones the
        published numbers measure. :meth:`forward_layers` applies it to PIL inputs itself; call
        it to prepare tensors yourself (a DataLoader, a cache of inputs).
        """
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

    def resolve_blocks(self, layers: Blocks) -> list[int]:
        """A block selection as sorted, unique, non-negative block indices.

        ``layers`` is an index (``-1`` is the last block, Python style), ``"last"``, ``"all"``, or
        any iterable of those, in any order and with repeats; anything out of range is a
        :class:`~aimbench.errors.UserError` that names the valid range.
        """
        return sorted(self._blocks_as_asked(layers))

    def _blocks_as_asked(self, layers: Blocks) -> list[int]:
        """:meth:`resolve_blocks` in the order asked (first mention wins), for :meth:`forward_layers`' result."""
        name, depth = self.spec.name, self.depth
        items = [layers] if isinstance(layers, (str, int)) or not isinstance(layers, Iterable) else list(layers)
        if not items:
            raise UserError(f"no blocks asked of {name}: give block indices, 'last' or 'all'")
        blocks: dict[int, None] = {}  # ordered and unique
        for item in items:
            if isinstance(item, str):
                if item not in BLOCK_NAMES:
                    raise UserError(f"unknown block name '{item}' for {name}: use 'last', 'all' or an index in 0..{depth - 1}")
                blocks.update(dict.fromkeys(range(depth) if item == "all" else [depth - 1]))
                continue
            try:
                if isinstance(item, bool):
                    raise TypeError
                index = operator.index(item)
            except TypeError:
                raise UserError(f"block {item!r} for {name} is not an index: use an int, 'last' or 'all'") from None
            if not -depth <= index < depth:
                raise UserError(f"block {index} out of range for {name} (depth {depth}: 0..{depth - 1} or -{depth}..-1)")
            blocks.setdefault(index % depth)
        return list(blocks)

    def image_batch(self, images: Images) -> torch.Tensor:
        """``images`` as a (B, 3, S, S) float tensor, S the card's ``image_size``: a tensor is taken as
        already preprocessed and checked here, once for every family, so a wrong size or raw uint8
        pixels are one line saying what to pass instead, not an assertion deep inside the network;
        a PIL image or a list of them goes through :meth:`transform` and is stacked."""
        if isinstance(images, torch.Tensor):
            size = self.preprocess.image_size
            if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size) or not images.is_floating_point():
                raise UserError(
                    f"images for {self.spec.name} must be a preprocessed float (B, 3, {size}, {size}) tensor (the card's "
                    f"image_size), got a {str(images.dtype).removeprefix('torch.')} tensor of shape {tuple(images.shape)}; "
                    "pass PIL images and the backbone preprocesses them, or prepare tensors with backbone.transform()"
                )
            return images
        pictures = [images] if isinstance(images, Image.Image) else list(images)
        if not pictures or not all(isinstance(picture, Image.Image) for picture in pictures):
            kinds = sorted({type(picture).__name__ for picture in pictures}) or ["nothing"]
            raise UserError(f"images must be a (B, 3, H, W) tensor, a PIL image or a list of them, got {', '.join(kinds)}")
        transform = self.transform()
        return torch.stack([transform(picture) for picture in pictures])

    @property
    def provenance(self) -> FeatureProvenance:
        """How the tensors from :meth:`forward_layers` were taken from the network: by default raw
        block outputs (the residual stream, no final norm), as the AIM protocol reads them."""
        return FeatureProvenance("block output (residual stream)", False, self.spec.prefix_layout)

    def forward_layers(self, images: Images, layers: Blocks) -> BlockTokens:
        """Run the network once and return the tokens of the chosen blocks, keyed by block index.

        ``images``: a float tensor (B, 3, S, S) already preprocessed (e.g. by :meth:`transform`
        in a DataLoader; S is the card's ``image_size``), or a PIL image or list of PIL images,
        which are preprocessed here with the card's transform, so that features always come from
        the inputs the weights expect.

        ``layers``: a block index or several, in any order, repeats collapsed; negative indices
        count from the end (``-1`` is the last block); ``"last"`` and ``"all"`` name blocks too.
        Every block comes from the same single forward pass (it stops after the deepest one
        asked for), which is why a layer-wise sweep costs one pass, not one per layer.

        Returns a :class:`BlockTokens` mapping: its keys are the non-negative block indices, each
        once, in the order asked; a look-up also takes the index or name as asked. For example
        ``out = backbone.forward_layers(Image.open("cat.jpg"), [-1, 0])`` iterates as
        ``depth - 1, 0``, and ``out[-1]``, ``out["last"]`` and ``out[depth - 1]`` are the same
        :class:`LayerTokens`, whose ``layer`` is ``depth - 1`` and ``patches`` of shape (1, N, D).
        Out-of-range blocks, unknown names and unusable images raise
        :class:`~aimbench.errors.UserError`.
        """
        asked = self._blocks_as_asked(layers)
        batch = self.image_batch(images)
        by_block = {tokens.layer: tokens for tokens in self._forward_blocks(batch, sorted(asked))}
        return BlockTokens((by_block[block] for block in asked), self.depth)

    def final_norm(self) -> nn.Module | None:
        """The norm the network applies after its last block, which DINOv2's linear protocol applies to
        every block it reads (``block_norm = "final"``); families that have one say which it is. None:
        the network has none (it pools first and normalises after, as timm's ``fc_norm`` models do, or
        a module names none), and its blocks are read raw, as timm's ``forward_intermediates(norm=True)``
        reads such a model."""
        return None

    @abstractmethod
    def _forward_blocks(self, images: torch.Tensor, blocks: list[int]) -> list[LayerTokens]:
        """A family's forward: preprocessed images (B, 3, H, W) and ``blocks`` sorted, unique and
        within ``0..depth - 1`` -> one :class:`LayerTokens` per block, in the same order."""
