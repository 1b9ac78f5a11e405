"""Any timm vision transformer behind the backbone contract, via ``forward_intermediates``.

Weights come from the card's ``weights`` field (or an override):
``random`` — timm's own initialisation under a fixed seed (tiny models for tests and the demo);
``timm`` — the pretrained tag in ``arch`` from the Hugging Face cache or hub;
a file path or ``hf:`` source — a state dict in timm's layout or any layout timm's filter for
the model converts (original DINOv2, BEiT, ... releases), then loaded strictly.

What this family knows of a built timm ViT — its shape (:func:`vit_architecture`) and how its
block outputs are read (:func:`vit_block_tokens`) — is shared with ``module_family``, which wraps
a timm model a user built themselves, so both read the same tokens the same way.
"""

from __future__ import annotations

import fnmatch
import sys
from pathlib import Path
from typing import Any

import timm
import torch
from huggingface_hub.errors import LocalEntryNotFoundError
from torch import nn

from aimbench.adapters.base import Backbone, LayerTokens, WeightsInfo
from aimbench.adapters.weights import load_strict, load_weights, state_dict_sha256
from aimbench.cards.backbone_card import BackboneSpec
from aimbench.errors import CardError, UserError

RANDOM_INIT_SEED = 0


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


def _timm_filter(
    spec: BackboneSpec, model: nn.Module, state: dict[str, torch.Tensor], path: Path
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Apply the model module's own ``checkpoint_filter_fn``, as timm does for pretrained files: it
    converts original release layouts (DINOv2, BEiT, ...) and can resample tensors to the card's
    shapes. Resampling changes what the network computes, so it is allowed only for the tensors the
    card lists in ``resample_keys``; returns the converted state and the tensors it resampled. The
    file itself was already loaded without running pickled code."""
    convert = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if convert is None:
        return state, []
    try:
        converted = convert(dict(state), model)
    except (RuntimeError, ValueError, IndexError, KeyError, TypeError, AssertionError) as exc:
        raise UserError(f"weights '{path}' are not in a layout {spec.arch} loads: timm's checkpoint filter failed "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no message'})") from None  # fmt: skip
    reshaped = sorted(k for k in state if k in converted and converted[k].shape != state[k].shape)
    refused = [k for k in reshaped if not any(fnmatch.fnmatchcase(k, pattern) for pattern in spec.resample_keys)]
    if refused:
        shown = ", ".join(f"{k} {tuple(state[k].shape)} -> {tuple(converted[k].shape)}" for k in refused[:5])
        raise UserError(
            f"weights '{path}' do not fit '{spec.name}' as they are: {len(refused)} tensor(s) would be resampled ({shown}); "
            "resampling changes what the network computes, so it is done only for tensors the card lists in resample_keys"
        )
    return converted, reshaped


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
    state, resampled = _timm_filter(spec, model, state, path)
    if resampled:  # recorded with the weights' id, since the network is not quite the file's
        info = WeightsInfo(f"{info.id} (resampled: {', '.join(resampled)})", info.sha256)
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier")
    if isinstance(classifier, str):  # the probe replaces any classifier; drop it from the file
        state = {k: v for k, v in state.items() if not k.startswith(classifier + ".")}
    load_strict(model, state, str(path))
    return model, info


def vit_missing(model: nn.Module) -> list[str]:
    """What ``model`` lacks to be read as a timm ViT (``forward_intermediates`` over ``blocks`` of
    attention with ``num_heads``, width ``embed_dim``); empty when it has it all."""
    missing = [name for name in ("forward_intermediates", "blocks", "embed_dim") if not hasattr(model, name)]
    if "blocks" not in missing:
        blocks: Any = model.blocks
        try:
            first = blocks[0]
        except (TypeError, IndexError, KeyError):  # not indexable, or no block at all
            first = None
        if not hasattr(getattr(first, "attn", None), "num_heads"):
            missing.append("blocks[0].attn.num_heads")
    return missing


def vit_architecture(model: nn.Module) -> dict[str, Any]:
    """What a card states of a timm ViT, read from the built model: depth, dim, heads, cls_token,
    registers (``vit_missing(model)`` must be empty)."""
    vit: Any = model  # timm's attributes, which nn.Module's typing does not know
    return {
        "depth": len(vit.blocks),
        "dim": int(vit.embed_dim),
        "heads": int(vit.blocks[0].attn.num_heads),
        "cls_token": getattr(model, "cls_token", None) is not None,  # ViT and BEiT alike
        "registers": int(getattr(model, "num_reg_tokens", 0)),
    }


def vit_block_tokens(model: nn.Module, images: torch.Tensor, blocks: list[int], has_prefix: bool) -> list[LayerTokens]:
    """Raw block outputs (``norm=False``, as the AIM protocol reads them) of a timm ViT, one forward
    stopping after the deepest block; ``blocks`` sorted and unique, ``images`` already prepared."""
    options = dict(indices=blocks, norm=False, output_fmt="NLC", intermediates_only=True, stop_early=True)
    forward_intermediates: Any = model.forward_intermediates
    if not has_prefix:
        # timm returns malformed tuples when prefix tokens are requested from a model without any
        outputs = forward_intermediates(images, **options)
        return [LayerTokens(block, tokens, None) for block, tokens in zip(blocks, outputs)]
    outputs = forward_intermediates(images, return_prefix_tokens=True, **options)
    return [LayerTokens(block, patches, prefix) for block, (patches, prefix) in zip(blocks, outputs)]


def vit_final_norm(model: nn.Module) -> nn.Module | None:
    """A timm ViT's norm after its last block (``model.norm``, what ``forward_intermediates(norm=True)``
    applies to every intermediate); None for a model that pools first and normalises after (``fc_norm``),
    whose intermediates timm returns raw."""
    norm = getattr(model, "norm", None)
    return None if not isinstance(norm, nn.Module) or isinstance(norm, nn.Identity) else norm


def check_against_card(spec: BackboneSpec, model: nn.Module) -> None:
    """Fail if the built network is not the one the card describes (depth, width, tokens)."""
    missing = vit_missing(model)
    if missing:
        raise CardError(
            spec.card_path, f"variants.{spec.name}.arch", f"not a transformer with forward_intermediates (no {', '.join(missing)})"
        )
    for field, value in vit_architecture(model).items():
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

    def final_norm(self) -> nn.Module | None:
        return vit_final_norm(self.model)

    def _forward_blocks(self, images: torch.Tensor, blocks: list[int]) -> list[LayerTokens]:
        return vit_block_tokens(self.model, self.prepare(images), blocks, bool(self.spec.prefix_layout))
