"""The visual tower of an open_clip CLIP model (OpenAI CLIP, DFN, ...) behind the backbone contract.

``arch`` is a built-in open_clip model name (one of ``open_clip.list_models()``, e.g.
``ViT-B-16-quickgelu``) whose tower is open_clip's own ``VisionTransformer``; ``hf-hub:`` and
``local-dir:`` names are not accepted (they would fetch a config at build time). The whole CLIP
model is built by ``open_clip.create_model`` and only ``model.visual`` is kept: the text tower,
logit scale and the rest are dropped at once.

``model_args`` overrides the open_clip model config (``open_clip/model_configs/<arch>.json``)
before the model is built: a table (``vision_cfg``, ``text_cfg``) is merged key by key into the
config's table of that name, any other key (``embed_dim``, ``quick_gelu``, ...) replaces the
top-level value. This is how tests build CPU-sized towers offline, e.g.
``model_args = { embed_dim = 16, vision_cfg = { image_size = 16, patch_size = 4, width = 32,
layers = 3, head_width = 16 }, text_cfg = { context_length = 8, vocab_size = 64, width = 16,
heads = 2, layers = 1 } }`` (the tiny text tower is built, then dropped). An unknown key, or a
keyword of ``create_model`` itself (``precision``, ``pretrained``, ...), is a CardError.

Weights come from the card's ``weights`` field (or an override):
``random`` — open_clip's own initialisation under a fixed seed, the caller's RNG untouched;
``open_clip:<tag>`` — open_clip's pretrained tag for ``arch`` (``dfn2b``, ``dfn5b``,
``openai``, ...), read through the Hugging Face cache (downloaded once when the hub is online).
The tag's QuickGELU flag, mean, std, interpolation and resize mode, as open_clip's pretrained config lists
them, must match the card;
a file path or ``hf:`` source — a state dict in open_clip's layout, either of the full CLIP model
(what open_clip releases and ``CLIP.state_dict()`` give: its ``visual.*`` entries are kept, the
rest is dropped) or of the visual tower alone (keys as in ``model.visual.state_dict()``).
Tag and file weights load strictly onto a tower built on the meta device, each tensor cast to the
requested precision, so the tower is held in memory once. Position embeddings are not resampled:
weights must match the card's image size.

Features are the raw outputs of the tower's residual blocks (``forward_intermediates`` with
``normalize_intermediates=False``): neither the final norm ``ln_post`` nor pooling nor ``proj``
is applied. open_clip ViTs always have one class token; it is the prefix.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.transformer import VisionTransformer
from torch import nn

from aimbench.adapters.base import Backbone, LayerTokens, WeightsInfo
from aimbench.adapters.weights import load_source, load_strict, load_weights, state_dict_sha256
from aimbench.cards.backbone_card import BackboneSpec
from aimbench.dtypes import torch_dtype
from aimbench.errors import CardError, UserError

RANDOM_INIT_SEED = 0
TAG_PREFIX = "open_clip:"  # open_clip:<pretrained tag of arch>, e.g. open_clip:dfn2b
VISUAL_PREFIX = "visual."  # the visual tower's entries in a full CLIP state dict
_CREATE_MODEL_KEYWORDS = frozenset(inspect.signature(open_clip.create_model).parameters) - {"model_kwargs"}
_OPEN_CLIP_DIR = str(Path(open_clip.__file__).resolve().parent)


def _field(spec: BackboneSpec, name: str) -> str:
    return f"variants.{spec.name}.{name}"


@contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """Drop open_clip's warnings while it builds (e.g. "Model initialized randomly" before the
    weights are loaded here); aimbench reports what it loaded itself. Errors still pass."""

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not str(Path(record.pathname).resolve()).startswith(_OPEN_CLIP_DIR)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _config_overrides(spec: BackboneSpec) -> dict[str, Any]:
    """Keyword arguments for ``create_model``: the card's model_args merged into the arch's config."""
    if spec.arch not in open_clip.list_models():
        import difflib

        close = difflib.get_close_matches(spec.arch, open_clip.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean: {', '.join(close)}?" if close else "; see open_clip.list_models()"
        raise CardError(spec.card_path, _field(spec, "arch"), f"'{spec.arch}' is not a built-in open_clip model{hint}")
    reserved = sorted(set(spec.model_args) & _CREATE_MODEL_KEYWORDS)
    if reserved:
        raise CardError(spec.card_path, _field(spec, "model_args"), f"{', '.join(reserved)} are not model config keys")
    config = open_clip.get_model_config(spec.arch)
    overrides = {}
    for key, value in spec.model_args.items():
        base = config.get(key)
        overrides[key] = {**base, **value} if isinstance(value, dict) and isinstance(base, dict) else value
    return overrides


def _create_visual(spec: BackboneSpec, device: str) -> nn.Module:
    """open_clip's model for the card, reduced to its visual tower (``device`` is cpu or meta)."""
    overrides = _config_overrides(spec)
    try:
        with _quiet_open_clip(), torch.device(device):
            model = open_clip.create_model(
                spec.arch, pretrained=None, device=device, pretrained_image=False, pretrained_text=False, **overrides
            )
    except TypeError as exc:  # an unknown key in model_args (top level or inside a cfg table)
        raise CardError(spec.card_path, _field(spec, "model_args"), str(exc)) from None
    visual = model.visual
    del model  # the text tower goes with it
    return visual


def _create_random(spec: BackboneSpec) -> nn.Module:
    """Build with a fixed init seed, leaving the caller's RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return _create_visual(spec, "cpu")


def check_against_card(spec: BackboneSpec, visual: nn.Module) -> None:
    """Fail if the built tower is not the one the card describes (depth, width, tokens, size)."""
    if not isinstance(visual, VisionTransformer):
        raise CardError(
            spec.card_path, _field(spec, "arch"), f"{spec.arch}'s visual tower is a {type(visual).__name__}, not an open_clip ViT"
        )
    actual = {
        "depth": len(visual.transformer.resblocks),
        "dim": visual.transformer.width,
        "heads": visual.transformer.resblocks[0].attn.num_heads,
        "cls_token": True,  # open_clip's ViT always prepends one class token
        "registers": 0,
    }
    for name, value in actual.items():
        if getattr(spec, name) != value:
            raise CardError(spec.card_path, _field(spec, name), f"card says {getattr(spec, name)!r} but {spec.arch} has {value!r}")
    size = spec.preprocess.image_size
    if tuple(visual.image_size) != (size, size):
        raise CardError(
            spec.card_path,
            _field(spec, "preprocess.image_size"),
            f"card says {size} but {spec.arch} takes {tuple(visual.image_size)} images (position embeddings are not resampled)",
        )


def tag_config(spec: BackboneSpec, tag: str) -> dict[str, Any]:
    """open_clip's pretrained config of ``tag`` for the card's arch, checked against the card:
    same QuickGELU setting as the arch, same mean, std, interpolation and resize mode as the card."""
    cfg = open_clip.get_pretrained_cfg(spec.arch, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(spec.arch)
        known = f"known tags: {', '.join(tags)}" if tags else "open_clip has no pretrained weights for it"
        raise CardError(spec.card_path, _field(spec, "weights"), f"unknown open_clip tag '{tag}' for {spec.arch}; {known}")
    arch_quick_gelu = bool({**open_clip.get_model_config(spec.arch), **spec.model_args}.get("quick_gelu", False))
    if bool(cfg.get("quick_gelu", False)) != arch_quick_gelu:
        want = "a -quickgelu" if cfg.get("quick_gelu") else "a non -quickgelu"
        raise CardError(
            spec.card_path,
            _field(spec, "arch"),
            f"open_clip tag '{tag}' was trained with quick_gelu={bool(cfg.get('quick_gelu'))} but {spec.arch} "
            f"has quick_gelu={arch_quick_gelu}; use {want} arch",
        )
    pre = spec.preprocess
    expected = {
        "mean": tuple(cfg["mean"]), "std": tuple(cfg["std"]), "interpolation": cfg["interpolation"],
        "resize_mode": cfg.get("resize_mode", "shortest"),
    }  # fmt: skip
    for name, value in expected.items():
        card = getattr(pre, name)
        same = card == value if isinstance(value, str) else all(abs(a - b) < 1e-6 for a, b in zip(card, value))
        if not same:
            raise CardError(
                spec.card_path, _field(spec, f"preprocess.{name}"), f"card says {card!r} but open_clip tag '{tag}' uses {value!r}"
            )
    return cfg


def _tag_file(spec: BackboneSpec, tag: str, cfg: Mapping[str, Any]) -> Path:
    """The local file of an open_clip tag, through the Hugging Face cache (never a bare URL)."""
    import huggingface_hub.constants

    if not cfg.get("hf_hub"):
        where = cfg.get("url") or "nowhere"
        raise UserError(f"open_clip tag '{tag}' of {spec.arch} is only published at {where}; download it and pass --weights PATH")
    try:
        return Path(open_clip.download_pretrained(dict(cfg)))
    except OSError as exc:  # open_clip turns the hub's errors (offline, missing) into FileNotFoundError
        if huggingface_hub.constants.HF_HUB_OFFLINE:
            raise UserError(
                f"open_clip weights '{tag}' for '{spec.name}' ({spec.arch}, hf:{cfg['hf_hub'].rstrip('/')}) are not in the "
                "Hugging Face cache and the hub is offline; download them once with network access "
                "(unset HF_HUB_OFFLINE), or pass --weights PATH to a local copy"
            ) from None
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot download open_clip weights '{tag}' for {spec.arch}: {first_line}") from None


def visual_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The visual tower's entries of a full CLIP state dict (``visual.`` stripped); a state dict
    without ``visual.*`` keys is taken to be the tower's own. A DDP ``module.`` prefix is removed."""
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: value for key, value in state.items()}
    if any(key.startswith(VISUAL_PREFIX) for key in state):
        return {key[len(VISUAL_PREFIX) :]: value for key, value in state.items() if key.startswith(VISUAL_PREFIX)}
    return dict(state)


def _build(spec: BackboneSpec, override: str | None, dtype: torch.dtype) -> tuple[nn.Module, WeightsInfo]:
    source = override or spec.weights
    if source == "random":
        visual = _create_random(spec)
        return visual, WeightsInfo(f"random-init:seed{RANDOM_INIT_SEED}", state_dict_sha256(visual.state_dict()))
    if source == "timm":
        raise CardError(spec.card_path, _field(spec, "weights"), f"open_clip weights are named {TAG_PREFIX}<tag>, not timm")
    visual = _create_visual(spec, "meta")
    check_against_card(spec, visual)  # before reading weights: a wrong card is named as such
    if source.startswith(TAG_PREFIX):
        tag = source[len(TAG_PREFIX) :]
        cfg = tag_config(spec, tag)
        path = _tag_file(spec, tag, cfg)
        own = override is None or override == spec.weights  # the card's checksum guards its own weights only
        state, info, _ = load_source(str(path), None, spec.sha256 if own else None)
        commit = path.parts[path.parts.index("snapshots") + 1][:12] if "snapshots" in path.parts else "unknown"
        info = WeightsInfo(f"{TAG_PREFIX}{spec.arch}/{tag}@{commit}", info.sha256)
    else:
        state, info, path = load_weights(spec, override)
    state = visual_state(state)
    for key in list(state):  # cast one tensor at a time: never a second full copy in memory
        state[key] = state[key].to(dtype)
    load_strict(visual, state, str(path), assign=True)
    return visual, info


class OpenClipBackbone(Backbone):
    """An open_clip ViT tower; features are raw block outputs, the class token is the prefix."""

    model: VisionTransformer  # check_against_card makes sure of it

    def __init__(self, spec: BackboneSpec, weights: str | None = None, dtype: str = "fp32") -> None:
        visual, info = _build(spec, weights, torch_dtype(dtype))
        check_against_card(spec, visual)
        super().__init__(spec, visual, info, dtype)

    def final_norm(self) -> nn.Module | None:
        return self.model.ln_post

    def _forward_blocks(self, images: torch.Tensor, blocks: list[int]) -> list[LayerTokens]:
        outputs = self.model.forward_intermediates(
            self.prepare(images),
            indices=blocks,
            stop_early=True,
            normalize_intermediates=False,
            intermediates_only=True,
            output_fmt="NLC",
            output_extra_tokens=True,
        )
        patches, prefixes = outputs["image_intermediates"], outputs["image_intermediates_prefix"]
        return [LayerTokens(block, p, c) for block, p, c in zip(blocks, patches, prefixes)]
