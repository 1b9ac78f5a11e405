"""Any timm vision transformer behind the backbone contract, via ``forward_intermediates``.

Weights come from the card's ``weights`` field (or an override):
``random`` — timm's own initialisation under a fixed seed (tiny models for tests and the demo);
``timm`` — the pretrained tag in ``arch`` from the Hugging Face cache or hub;
a file path or ``hf:`` source — a state dict in timm's layout or any layout timm's filter for
the model converts (original DINOv2, BEiT, ... releases), then loaded strictly.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Protocol, cast

import timm
import torch
from huggingface_hub.errors import LocalEntryNotFoundError
from torch import nn

from aimbench.adapters.base import Backbone, LayerTokens, WeightsInfo
from aimbench.adapters.weights import load_strict, load_weights, state_dict_sha256
from aimbench.cards.backbone_card import BackboneSpec
from aimbench.errors import CardError, UserError

RANDOM_INIT_SEED = 0


class TimmViT(Protocol):
    """What aimbench reads of a timm vision transformer (ViT, EVA, BEiT, ...). ``timm.create_model``
    types every model as a bare ``nn.Module``, whose other attributes a type checker reads as
    ``Tensor | Module``; :func:`check_against_card` verifies this surface when a model is built."""

    blocks: Sequence[Any]  # an nn.Sequential or nn.ModuleList of blocks, each with .attn.num_heads
    embed_dim: int
    pretrained_cfg: dict[str, Any]

    def forward_intermediates(self, x: torch.Tensor, **options: Any) -> Any: ...


def _as_vit(model: nn.Module) -> TimmViT:
    return cast(TimmViT, model)


def _create(spec: BackboneSpec, pretrained: bool) -> nn.Module:
    """Build the model with a fixed init seed, leaving the caller's RNG state untouched."""
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            return timm.create_model(spec.arch, pretrained=pretrained, num_classes=0, **spec.model_args)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise CardError(spec.card_path, f"variants.{spec.name}.arch", str(exc)) from None
        raise
    except TypeError as exc:  # an unknown keyword in model_args
        raise CardError(spec.card_path, f"variants.{spec.name}.model_args", str(exc)) from None


def _timm_filter(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Apply the model module's own ``checkpoint_filter_fn``, as timm does for pretrained files:
    it converts original release layouts (DINOv2, BEiT, ...) and resamples position embeddings
    to the card's resolution. The file itself was already loaded without running pickled code."""
    convert = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    return convert(state, model) if convert is not None else state


def _create_with_weights(spec: BackboneSpec, override: str | None) -> tuple[nn.Module, WeightsInfo]:
    weights = override or spec.weights
    if weights == "random":
        model = _create(spec, pretrained=False)
        return model, WeightsInfo(f"random-init:seed{RANDOM_INIT_SEED}", state_dict_sha256(model.state_dict()))
    if weights == "timm":
        try:
            model = _create(spec, pretrained=True)
        except (LocalEntryNotFoundError, OSError) as exc:
            raise UserError(
                f"pretrained weights for '{spec.name}' ({spec.arch}) are not available offline: "
                f"{type(exc).__name__}; download them once on a networked machine "
                "(unset HF_HUB_OFFLINE), or pass --weights PATH to a local file"
            ) from None
        return model, WeightsInfo(f"timm:{spec.arch}", state_dict_sha256(model.state_dict()))
    model = _create(spec, pretrained=False)
    state, info, path = load_weights(spec, override)
    state = _timm_filter(model, state)
    classifier = _as_vit(model).pretrained_cfg.get("classifier")
    if isinstance(classifier, str):  # the probe replaces any classifier; drop it from the file
        state = {k: v for k, v in state.items() if not k.startswith(classifier + ".")}
    load_strict(model, state, str(path))
    return model, info


def check_against_card(spec: BackboneSpec, model: nn.Module) -> None:
    """Fail if the built network is not the one the card describes (depth, width, tokens)."""
    if not hasattr(model, "forward_intermediates") or not hasattr(model, "blocks"):
        raise CardError(spec.card_path, f"variants.{spec.name}.arch", "not a transformer with forward_intermediates")
    vit = _as_vit(model)
    actual = {
        "depth": len(vit.blocks),
        "dim": vit.embed_dim,
        "heads": vit.blocks[0].attn.num_heads,
        "cls_token": getattr(model, "cls_token", None) is not None,  # ViT and BEiT alike
        "registers": int(getattr(model, "num_reg_tokens", 0)),
    }
    for field, value in actual.items():
        if getattr(spec, field) != value:
            raise CardError(
                spec.card_path,
                f"variants.{spec.name}.{field}",
                f"card says {getattr(spec, field)!r} but {spec.arch} has {value!r}",
            )


class TimmBackbone(Backbone):
    """A timm ViT; features are raw block outputs (``norm=False``), as the AIM protocol reads them."""

    def __init__(self, spec: BackboneSpec, weights: str | None = None, dtype: str = "fp32") -> None:
        model, info = _create_with_weights(spec, weights)
        check_against_card(spec, model)
        super().__init__(spec, model, info, dtype)

    def _forward_blocks(self, images: torch.Tensor, blocks: list[int]) -> list[LayerTokens]:
        options = dict(indices=blocks, norm=False, output_fmt="NLC", intermediates_only=True, stop_early=True)
        images = self.prepare(images)
        if not self.spec.prefix_layout:
            # timm returns malformed tuples when prefix tokens are requested from a model without any
            outputs = _as_vit(self.model).forward_intermediates(images, **options)
            return [LayerTokens(block, tokens, None) for block, tokens in zip(blocks, outputs)]
        outputs = _as_vit(self.model).forward_intermediates(images, return_prefix_tokens=True, **options)
        return [LayerTokens(block, patches, prefix) for block, (patches, prefix) in zip(blocks, outputs)]
