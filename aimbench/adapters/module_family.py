"""A user's own ``torch.nn.Module`` behind the backbone contract, with no TOML card.

Researchers hold models as objects (a timm model they fine-tuned, their own ViT in a notebook);
:func:`backbone_from_module` wraps one as a :class:`~aimbench.adapters.base.Backbone`, so
``forward_layers`` and the probes read it exactly as they read a carded backbone. Two kinds of
module are understood:

- a timm ViT-like model (``forward_intermediates`` over ``blocks``), read through the very
  functions the timm family uses (:func:`~aimbench.adapters.timm_family.vit_block_tokens`), so
  the same weights give the same tokens either way;
- any module implementing :class:`BlockTokensModule`, a small protocol for everything else.

What a card would state is built in memory: depth, width, heads and prefix tokens from the
module, the preprocessing from the caller (for a timm model, defaults from the model's own input
size and pretrained config). The weights' identity is the SHA-256 of the module's state dict
(names, dtypes, shapes and bytes, in sorted order), so the same weights are always the same
identity, whichever object holds them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from aimbench.adapters.base import Backbone, LayerTokens, WeightsInfo, describe_tensor
from aimbench.adapters.timm_family import vit_architecture, vit_block_tokens, vit_final_norm, vit_missing
from aimbench.adapters.weights import state_dict_sha256
from aimbench.cards.backbone_card import CLS, IN_MEMORY, INTERPOLATIONS, PATCH_MEAN, RESIZE_MODES, BackboneSpec, Preprocess
from aimbench.dtypes import DTYPES
from aimbench.errors import UserError

FAMILY = ADAPTER = IN_MEMORY  # what records and reports call a backbone wrapped from a module
PREPROCESS_FIELDS = ("image_size", "resize_size", "crop_pct", "interpolation", "mean", "std", "resize_mode")
PROTOCOL_ATTRIBUTES = ("forward_blocks", "depth", "dim", "num_heads", "num_prefix_tokens")
TIMM_CROP_MODES = {"center": "shortest", "squash": "squash"}  # timm's crop_mode -> Preprocess.resize_mode


class BlockTokensModule(Protocol):
    """What a module that is not a timm ViT implements to be wrapped by :func:`backbone_from_module`.

    ``forward_blocks(images, blocks)`` gets preprocessed images (B, 3, S, S) in the module's dtype
    and on its device, and ``blocks``: sorted, unique indices in ``0..depth - 1``. It returns one
    tensor per block, in the same order, of shape (B, num_prefix_tokens + N, dim): the block's
    output tokens — the raw residual stream, before any final norm, as the probes' protocol reads
    every family — with the prefix tokens (cls first, then registers) ahead of the N patch tokens
    in raster order. It should stop after the deepest block asked for: a layer-wise sweep then
    costs one pass.

    ``depth``: number of blocks; ``dim``: token width; ``num_heads`` (or ``heads``): attention
    heads; ``num_prefix_tokens``: tokens before the patches (0 if none), of which
    ``num_reg_tokens`` (optional, default 0) are registers and any other one is a cls token.
    """

    depth: int
    dim: int
    num_heads: int
    num_prefix_tokens: int

    def forward_blocks(self, images: torch.Tensor, blocks: Sequence[int]) -> Sequence[torch.Tensor]: ...


class ModuleBackbone(Backbone):
    """A wrapped module (see :func:`backbone_from_module`); frozen, in eval mode, on the module's device."""

    def __init__(self, spec: BackboneSpec, model: nn.Module, weights: WeightsInfo, dtype: str, *, timm_vit: bool) -> None:
        super().__init__(spec, model, weights, dtype)
        self.timm_vit = timm_vit
        parameter = next(model.parameters(), None)
        self.device = parameter.device if parameter is not None else torch.device("cpu")  # left where the user put it

    def final_norm(self) -> nn.Module | None:
        return vit_final_norm(self.model) if self.timm_vit else super().final_norm()

    def _forward_blocks(self, images: torch.Tensor, blocks: list[int]) -> list[LayerTokens]:
        images = self.prepare(images)
        if self.timm_vit:
            return vit_block_tokens(self.model, images, blocks, bool(self.spec.prefix_layout))
        module: Any = self.model
        outputs = list(module.forward_blocks(images, list(blocks)))
        prefix = len(self.spec.prefix_layout)
        expected = f"one (B={len(images)}, {prefix} + N, {self.dim}) tensor per block asked ({len(blocks)})"
        fits = len(outputs) == len(blocks) and all(
            isinstance(out, torch.Tensor) and out.ndim == 3 and out.shape[0] == len(images) and out.shape[1] > prefix
            and out.shape[2] == self.dim
            for out in outputs
        )  # fmt: skip
        if not fits:
            got = ", ".join(describe_tensor(out) if isinstance(out, torch.Tensor) else type(out).__name__ for out in outputs)
            raise UserError(f"{type(module).__name__}.forward_blocks returned [{got}]; expected {expected}")
        return [LayerTokens(block, out[:, prefix:], out[:, :prefix] if prefix else None) for block, out in zip(blocks, outputs)]


def _protocol_architecture(model: nn.Module) -> dict[str, Any]:
    """depth, dim, heads, cls_token, registers of a :class:`BlockTokensModule`, each checked."""
    module: Any = model
    heads = getattr(module, "num_heads", getattr(module, "heads", None))
    values = {"depth": module.depth, "dim": module.dim, "num_heads": heads, "num_prefix_tokens": module.num_prefix_tokens,
              "num_reg_tokens": getattr(module, "num_reg_tokens", 0)}  # fmt: skip
    for attribute, value in values.items():
        minimum = 0 if attribute in ("num_prefix_tokens", "num_reg_tokens") else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise UserError(f"{type(model).__name__}.{attribute} must be an int of at least {minimum}, got {value!r}")
    if values["dim"] % values["num_heads"]:
        raise UserError(f"{type(model).__name__}: dim {values['dim']} is not divisible by num_heads {values['num_heads']}")
    cls_tokens = values["num_prefix_tokens"] - values["num_reg_tokens"]
    if cls_tokens not in (0, 1):  # the prefix layout (cls, then registers) must name every prefix token
        raise UserError(
            f"{type(model).__name__}: {values['num_prefix_tokens']} prefix tokens with {values['num_reg_tokens']} registers "
            "is not at most one cls token followed by the registers; set num_reg_tokens to the number of registers"
        )
    return {"depth": values["depth"], "dim": values["dim"], "heads": values["num_heads"], "cls_token": cls_tokens == 1,
            "registers": values["num_reg_tokens"]}  # fmt: skip


def _kind(model: nn.Module) -> bool:
    """True for a timm ViT, False for a :class:`BlockTokensModule`; anything else is one UserError naming what it lacks."""
    name = type(model).__name__
    if not isinstance(model, nn.Module):
        raise UserError(f"model must be a torch.nn.Module, got {name}")
    has = {attribute: hasattr(model, attribute) for attribute in PROTOCOL_ATTRIBUTES}
    has["num_heads"] = has["num_heads"] or hasattr(model, "heads")
    missing = [attribute.replace("num_heads", "num_heads/heads") for attribute, present in has.items() if not present]
    if hasattr(model, "forward_blocks"):
        if missing:
            raise UserError(f"{name} does not implement BlockTokensModule (aimbench.adapters.module_family): no {', '.join(missing)}")
        return False
    if hasattr(model, "forward_intermediates"):
        lacking = vit_missing(model)
        if lacking:
            raise UserError(f"{name} has forward_intermediates but is not a timm ViT: no {', '.join(lacking)}; "
                            "implement BlockTokensModule (aimbench.adapters.module_family) instead")  # fmt: skip
        return True
    raise UserError(f"{name} is neither a timm ViT (no forward_intermediates) nor a BlockTokensModule "
                    f"(aimbench.adapters.module_family; no {', '.join(missing)})")  # fmt: skip


def _timm_defaults(model: nn.Module) -> dict[str, Any]:
    """The preprocessing a timm model states: its built input size (not the pretrained config's,
    which keeps 224 when ``img_size`` was changed) and its config's mean, std, interpolation, crop."""
    from timm.data import resolve_model_data_config

    config = resolve_model_data_config(model)
    defaults: dict[str, Any] = {"mean": config["mean"], "std": config["std"], "interpolation": config["interpolation"],
                                "crop_pct": config["crop_pct"]}  # fmt: skip
    mode = TIMM_CROP_MODES.get(config.get("crop_mode", "center"))
    if mode is not None:
        defaults["resize_mode"] = mode
    size = getattr(getattr(model, "patch_embed", None), "img_size", None) or config["input_size"][1:]
    if len(set(size)) == 1:
        defaults["image_size"] = int(size[0])
    return defaults


def _fixed_size(model: nn.Module) -> int | None:
    """The one input size a timm ViT accepts (None when it takes any)."""
    embed = getattr(model, "patch_embed", None)
    if embed is None or not getattr(embed, "strict_img_size", False) or getattr(model, "dynamic_img_size", False):
        return None
    return int(embed.img_size[0])


def _preprocess(model: nn.Module, transform: Preprocess | Mapping[str, Any] | None, timm_vit: bool) -> Preprocess:
    """The eval preprocessing: a :class:`Preprocess` as given, or its fields (``crop_pct`` may stand
    for ``resize_size``, as in timm) over a timm model's own defaults; checked as a card's is."""
    if isinstance(transform, Preprocess):
        fields: dict[str, Any] = {**transform.as_dict()}
        fields.pop("crop")
    else:
        given = dict(transform or {})
        unknown = sorted(set(given) - set(PREPROCESS_FIELDS))
        if unknown:
            raise UserError(f"unknown transform field(s) {', '.join(unknown)}; use {', '.join(PREPROCESS_FIELDS)}")
        if "resize_size" in given and "crop_pct" in given:
            raise UserError("give the transform's resize_size or its crop_pct (resize_size = image_size / crop_pct), not both")
        defaults = _timm_defaults(model) if timm_vit else {"interpolation": "bicubic", "resize_mode": "shortest"}
        fields = {**defaults, **given}
        if "resize_size" in given:  # the caller's resize, not the model config's crop
            fields["crop_pct"] = None
    missing = [name for name in ("image_size", "mean", "std") if fields.get(name) is None]
    if missing:
        raise UserError(f"the transform needs {', '.join(missing)}: the preprocessing the weights were trained with, "
                        "e.g. transform={'image_size': 224, 'mean': (0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225)}")  # fmt: skip
    size = _size(fields["image_size"], "image_size")
    crop_pct = fields.pop("crop_pct", None)
    resize = fields.get("resize_size")
    if resize is None:  # timm's rule: resize to image_size / crop_pct, then centre-crop image_size
        resize = math.floor(size / crop_pct) if crop_pct else size
    resize = _size(resize, "resize_size")
    pre = Preprocess(
        image_size=size, resize_size=resize, interpolation=str(fields["interpolation"]), mean=_three(fields["mean"], "mean"),
        std=_three(fields["std"], "std"), resize_mode=str(fields.get("resize_mode", "shortest")),
    )  # fmt: skip
    problems = [
        f"image_size must be at least 1, got {pre.image_size}" if pre.image_size < 1 else "",
        f"resize_size {pre.resize_size} must be at least image_size {pre.image_size}" if pre.resize_size < pre.image_size else "",
        f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {pre.interpolation!r}" if pre.interpolation not in INTERPOLATIONS else "",
        f"resize_mode must be one of {', '.join(RESIZE_MODES)}, got {pre.resize_mode!r}" if pre.resize_mode not in RESIZE_MODES else "",
        f"every std must be positive, got {pre.std}" if min(pre.std) <= 0 else "",
    ]  # fmt: skip
    if any(problems):
        raise UserError("bad transform: " + "; ".join(problem for problem in problems if problem))
    fixed = _fixed_size(model) if timm_vit else None
    if fixed is not None and fixed != pre.image_size:
        raise UserError(f"transform image_size {pre.image_size} does not fit {type(model).__name__}, built for {fixed} px inputs "
                        "(build it with that img_size, or dynamic_img_size=True)")  # fmt: skip
    return pre


def _size(value: object, name: str) -> int:
    """A pixel size: an int, never a bool or a float (``224.0`` is a slip, not a size)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"transform {name} must be an int, got {value!r}")
    return value


def _three(values: object, name: str) -> tuple[float, float, float]:
    try:
        items = tuple(float(value) for value in values)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        items = ()
    if len(items) != 3:
        raise UserError(f"transform {name} must be three numbers (one per RGB channel), got {values!r}")
    return items[0], items[1], items[2]


def _dtype_of(model: nn.Module) -> str:
    """The precision the module is in: a wrapped module is left as it is unless ``dtype`` says otherwise."""
    floating = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    by_name = {torch_name: name for name, torch_name in DTYPES.items()}
    found = by_name.get(str(floating).removeprefix("torch."))
    if found is None:
        raise UserError(f"{type(model).__name__} holds {floating} weights; pass dtype as one of {', '.join(DTYPES)}")
    return found


def _windows(windows: Mapping[str, Sequence[int]] | None, depth: int) -> dict[str, tuple[int, ...]]:
    """Named layer windows as a card declares them (``last``/``best`` -> blocks), checked the same way."""
    checked = {}
    for name, blocks in (windows or {}).items():
        if name not in ("last", "best"):
            raise UserError(f"a window is named last or best (what --layers and published numbers call them), got {name!r}")
        if not blocks or not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b < depth for b in blocks):
            raise UserError(f"window {name!r} must be a non-empty list of block indices in 0..{depth - 1}, got {list(blocks)!r}")
        checked[name] = tuple(sorted(set(blocks)))
    return checked


def backbone_from_module(
    model: nn.Module,
    *,
    name: str,
    transform: Preprocess | Mapping[str, Any] | None = None,
    dtype: str | None = None,
    probe_tokens: Sequence[str] | None = None,
    windows: Mapping[str, Sequence[int]] | None = None,
    description: str = "",
    license: str = "unknown",
) -> ModuleBackbone:
    """Wrap ``model`` — a timm ViT-like model or a :class:`BlockTokensModule` — as a backbone named ``name``.

    ``transform``: the eval preprocessing the weights expect, a
    :class:`~aimbench.cards.backbone_card.Preprocess` or a mapping of its fields (``image_size``,
    ``mean``, ``std``, ``interpolation``, ``resize_size`` or timm's ``crop_pct``, ``resize_mode``);
    for a timm model, fields left out come from the model (its input size, its pretrained config's
    mean, std, interpolation and crop), for any other module ``image_size``, ``mean`` and ``std``
    are required. ``dtype`` None keeps the module's precision. ``probe_tokens`` and ``windows``
    mean what they mean in a card (default: patch mean, plus cls where the module has one; no
    windows). The module itself is frozen, put in eval mode and, with ``dtype``, cast: in place, on
    its own device, not copied (a 7B model is not held twice).

    Raises :class:`~aimbench.errors.UserError` in one line for a module that is neither kind
    (naming what it lacks) or for a transform that does not describe an input it takes.
    """
    timm_vit = _kind(model)
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"a wrapped module needs a name (what records and reports call it), got {name!r}")
    arch = vit_architecture(model) if timm_vit else _protocol_architecture(model)
    if dtype is not None and dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}'; one of {', '.join(DTYPES)}")
    precision = dtype or _dtype_of(model)
    default_tokens = (PATCH_MEAN, CLS) if arch["cls_token"] else (PATCH_MEAN,)
    tokens = tuple(probe_tokens) if probe_tokens is not None else default_tokens
    if not tokens or set(tokens) - set(default_tokens) or len(set(tokens)) != len(tokens):
        raise UserError(f"probe_tokens must be distinct values among {', '.join(default_tokens)}, got {list(tokens)}")
    class_name = type(model).__name__
    config_arch = getattr(model, "pretrained_cfg", {}).get("architecture") if timm_vit else None
    weights = WeightsInfo(f"module:{class_name}", state_dict_sha256(model.state_dict()))  # before any cast: the weights as given
    spec = BackboneSpec(
        name=name,
        family=FAMILY,
        adapter=ADAPTER,
        arch=config_arch or f"{type(model).__module__}.{type(model).__qualname__}",
        weights=weights.id,
        sha256=weights.sha256,  # the weights' content is what the spec describes: a cell's identity reads it from here
        depth=arch["depth"],
        dim=arch["dim"],
        heads=arch["heads"],
        cls_token=arch["cls_token"],
        registers=arch["registers"],
        preprocess=_preprocess(model, transform, timm_vit),
        license=license,
        description=description,
        card_path=Path(f"<module {class_name}>"),  # no card: what a CardError or a listing shows instead
        probe_tokens=tokens,
        declared_windows=_windows(windows, arch["depth"]),
    )
    return ModuleBackbone(spec, model, weights, precision, timm_vit=timm_vit)
