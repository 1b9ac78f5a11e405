"""AIM v1 behind the backbone contract, on aimbench's own network (``aimbench.models.aim``).

``arch`` names a preset. Weights are ``random`` (PyTorch's default init under a fixed seed), a
local file, or ``hf:apple/AIM/<file>``; files must be in Apple's key layout and load strictly.
The LayerNorm eps is the released models' 1e-6 unless the file says otherwise: a trunk exported by
``aimbench pretrain`` records the eps it was trained with (l3m's 1e-5) in its metadata.
Models are built on the meta device and receive the file's tensors directly, cast one by one to
the requested precision (``.pth`` files are memory-mapped), so even a 7B is held in memory once.
"""

from __future__ import annotations

import torch
from torch import nn

from aimbench.adapters.base import Backbone, LayerTokens, WeightsInfo
from aimbench.adapters.weights import file_metadata, load_strict, load_weights, state_dict_sha256
from aimbench.cards.backbone_card import BackboneSpec
from aimbench.dtypes import torch_dtype
from aimbench.errors import CardError
from aimbench.models.aim import AIM, LN_EPS, LN_EPS_METADATA, PRESETS, build_aim

RANDOM_INIT_SEED = 0


def _check_card(spec: BackboneSpec) -> None:
    field = f"variants.{spec.name}"
    if spec.arch not in PRESETS:
        raise CardError(spec.card_path, f"{field}.arch", f"unknown AIM preset '{spec.arch}'; one of {', '.join(PRESETS)}")
    if spec.model_args:
        raise CardError(spec.card_path, f"{field}.model_args", "the aim adapter takes no model_args (presets fix the shape)")
    config = PRESETS[spec.arch]
    expected = {"depth": config.depth, "dim": config.width, "heads": config.heads, "cls_token": False, "registers": 0}
    for name, value in expected.items():
        if getattr(spec, name) != value:
            raise CardError(spec.card_path, f"{field}.{name}", f"card says {getattr(spec, name)!r} but {spec.arch} has {value!r}")


def _build(spec: BackboneSpec, override: str | None, dtype: torch.dtype) -> tuple[AIM, WeightsInfo]:
    source = override or spec.weights
    if source == "timm":
        raise CardError(spec.card_path, f"variants.{spec.name}.weights", "AIM v1 is not in timm; use random, a file or hf:")
    if source == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = build_aim(spec.arch, dtype=dtype)
        return model, WeightsInfo(f"random-init:seed{RANDOM_INIT_SEED}", state_dict_sha256(model.state_dict()))
    state, info, path = load_weights(spec, override)
    for key in list(state):  # cast one tensor at a time: never a second full copy in memory
        state[key] = state[key].to(dtype)
    ln_eps = float(file_metadata(path).get(LN_EPS_METADATA, LN_EPS))
    model = build_aim(spec.arch, device="meta", dtype=dtype, ln_eps=ln_eps)
    load_strict(model, state, str(path), assign=True)
    return model, info


class AimBackbone(Backbone):
    """AIM v1 trunk; features are raw block outputs over patch tokens (AIM has no cls token)."""

    model: AIM  # what _build returns

    def __init__(self, spec: BackboneSpec, weights: str | None = None, dtype: str = "fp32") -> None:
        _check_card(spec)
        model, info = _build(spec, weights, torch_dtype(dtype))
        super().__init__(spec, model, info, dtype)

    def final_norm(self) -> nn.Module | None:
        return self.model.trunk.post_trunk_norm

    def _forward_blocks(self, images: torch.Tensor, blocks: list[int]) -> list[LayerTokens]:
        outputs = self.model.forward_layers(self.prepare(images), blocks)
        return [LayerTokens(block, tokens, None) for block, tokens in zip(blocks, outputs)]
