"""A model object without a card: a timm ViT read exactly as the timm family reads it, a module
implementing the BlockTokensModule protocol, and one-line errors for anything else."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import timm
import torch
from PIL import Image
from torch import nn

from aimbench.adapters import build_backbone, load_backbone
from aimbench.adapters.base import Backbone
from aimbench.adapters.module_family import ModuleBackbone, backbone_from_module
from aimbench.cards.backbone_card import Preprocess
from aimbench.errors import UserError

# the shipped tiny cards' architectures (backbones/tiny.toml), built here as a user would
TIMM_ARGS: dict[str, dict[str, Any]] = {
    "vit-tiny-cls": {"img_size": 32, "patch_size": 4, "embed_dim": 96, "depth": 6, "num_heads": 3},
    "vit-tiny-reg": {"img_size": 32, "patch_size": 4, "embed_dim": 96, "depth": 6, "num_heads": 3, "class_token": False,
                     "reg_tokens": 4, "global_pool": "avg"},
}  # fmt: skip


def _timm_model(card: str, **extra: Any) -> Any:  # a timm VisionTransformer
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **{**TIMM_ARGS[card], **extra})


def _batch(size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


class TinyBlocks(nn.Module):
    """The protocol by hand: a 4 px patch embedding, a cls token, and residual linear blocks."""

    def __init__(self, heads_attribute: str = "num_heads") -> None:
        super().__init__()
        self.depth, self.dim, self.num_prefix_tokens = 3, 8, 1
        setattr(self, heads_attribute, 2)  # the protocol takes num_heads or heads
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.embed = nn.Conv2d(3, self.dim, 4, 4)
            self.cls = nn.Parameter(torch.randn(1, 1, self.dim))
            self.blocks = nn.ModuleList(nn.Linear(self.dim, self.dim) for _ in range(self.depth))
        self.calls: list[list[int]] = []

    def forward_blocks(self, images: torch.Tensor, blocks: Sequence[int]) -> list[torch.Tensor]:
        self.calls.append(list(blocks))
        x = self.embed(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1)
        outputs = []
        for index, block in enumerate(self.blocks[: max(blocks) + 1]):  # stops after the deepest block asked
            x = x + block(x)
            if index in blocks:
                outputs.append(x)
        return outputs


TINY_TRANSFORM = {"image_size": 16, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}


@pytest.mark.parametrize("card", sorted(TIMM_ARGS))
def test_a_timm_model_gives_the_timm_familys_tokens_and_identity(card: str) -> None:
    family = load_backbone(card)  # the card's random init under the family's fixed seed
    model = _timm_model(card)
    model.load_state_dict(family.model.state_dict())
    wrapped = backbone_from_module(model, name="mine", transform=family.preprocess)

    assert wrapped.weights.id == "module:VisionTransformer" and wrapped.weights.sha256 == family.weights.sha256
    for field in ("depth", "dim", "heads", "cls_token", "registers", "prefix_layout", "probe_tokens", "preprocess"):
        assert getattr(wrapped.spec, field) == getattr(family.spec, field), field
    assert (wrapped.spec.adapter, wrapped.spec.family, wrapped.spec.arch, wrapped.dtype) == (
        "module",
        "module",
        "vit_tiny_patch16_224",
        "fp32",
    )

    x = _batch()
    ours, theirs = wrapped.forward_layers(x, [3, -1, 0]), family.forward_layers(x, [3, -1, 0])
    assert list(ours) == list(theirs) == [3, 5, 0]
    for block in ours:
        assert torch.equal(ours[block].patches, theirs[block].patches)
        first, second = ours[block].prefix, theirs[block].prefix
        assert first is not None and second is not None and torch.equal(first, second)
    pictures = [Image.new("RGB", (40, 37), "orange"), Image.new("L", (31, 50), 90)]
    assert torch.equal(wrapped.forward_layers(pictures, "last")[-1].patches, family.forward_layers(pictures, "last")[-1].patches)
    assert wrapped.patch_tokens() == family.patch_tokens() == 64


def test_the_same_weights_are_the_same_identity_whatever_holds_them() -> None:
    first, second = _timm_model("vit-tiny-cls"), _timm_model("vit-tiny-cls")
    second.load_state_dict(first.state_dict())
    a, b = (backbone_from_module(m, name="x", transform=TINY_TRANSFORM | {"image_size": 32}) for m in (first, second))
    assert a.weights == b.weights and len(a.weights.sha256) == 64
    with torch.no_grad():
        second.blocks[2].mlp.fc1.bias.add_(1e-3)
    assert backbone_from_module(second, name="x", transform=TINY_TRANSFORM | {"image_size": 32}).weights.sha256 != a.weights.sha256


def test_a_timm_model_brings_its_own_preprocessing_unless_told_otherwise() -> None:
    wrapped = backbone_from_module(_timm_model("vit-tiny-cls"), name="x")
    # its built input size (not the pretrained config's 224) and its config's mean, std, interpolation, crop_pct 0.9
    assert wrapped.preprocess == Preprocess(image_size=32, resize_size=35, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3)
    chosen = backbone_from_module(_timm_model("vit-tiny-cls"), name="x", transform={"resize_size": 32, "interpolation": "bilinear"})
    assert (chosen.preprocess.resize_size, chosen.preprocess.interpolation, chosen.preprocess.image_size) == (32, "bilinear", 32)
    with pytest.raises(UserError, match=r"^transform image_size 64 does not fit VisionTransformer, built for 32 px inputs"):
        backbone_from_module(_timm_model("vit-tiny-cls"), name="x", transform={"image_size": 64})
    dynamic = backbone_from_module(_timm_model("vit-tiny-cls", dynamic_img_size=True), name="x", transform={"image_size": 48})
    assert dynamic.forward_layers(_batch(48), -1)[-1].patches.shape == (2, 144, 96)


def test_a_protocol_module_is_read_through_forward_blocks() -> None:
    module = TinyBlocks()
    wrapped = backbone_from_module(module, name="tiny-blocks", transform=TINY_TRANSFORM)
    assert isinstance(wrapped, ModuleBackbone) and isinstance(wrapped, Backbone) and not wrapped.timm_vit
    assert (wrapped.depth, wrapped.dim, wrapped.heads, wrapped.spec.prefix_layout) == (3, 8, 2, ("cls",))
    assert wrapped.spec.probe_tokens == ("patch_mean", "cls") and wrapped.weights.id == "module:TinyBlocks"
    assert wrapped.preprocess == Preprocess(image_size=16, resize_size=16, interpolation="bicubic", mean=(0.5,) * 3, std=(0.25,) * 3)
    assert not module.training and not any(p.requires_grad for p in module.parameters())  # frozen in place

    x = _batch(16)
    out = wrapped.forward_layers(x, [-1, 0])
    assert module.calls == [[0, 2]]  # sorted and unique, as the protocol promises
    assert list(out) == [2, 0] and out[-1] is out[2] and out[-1].layer == 2
    with torch.no_grad():
        tokens = torch.cat([module.cls.expand(2, -1, -1), module.embed(x).flatten(2).transpose(1, 2)], dim=1)
        for block in module.blocks:
            tokens = tokens + block(tokens)
    torch.testing.assert_close(out[2].patches, tokens[:, 1:])
    torch.testing.assert_close(out[2].prefix, tokens[:, :1])
    assert out[0].patches.shape == (2, 16, 8) and wrapped.patch_tokens() == 16
    one = wrapped.forward_layers(Image.new("RGB", (20, 24), "teal"), "last")
    assert one["last"].patches.shape == (1, 16, 8)


def test_heads_registers_windows_and_precision_follow_the_module() -> None:
    module: Any = TinyBlocks(heads_attribute="heads")
    module.heads, module.num_prefix_tokens, module.num_reg_tokens = 4, 3, 2
    wrapped = backbone_from_module(
        module.to(torch.bfloat16), name="x", transform=TINY_TRANSFORM, windows={"last": [2, 1]}, probe_tokens=["cls"]
    )
    assert wrapped.heads == 4 and wrapped.spec.prefix_layout == ("cls", "register", "register")
    assert wrapped.spec.windows == {"last": (1, 2)} and wrapped.spec.probe_tokens == ("cls",) and wrapped.dtype == "bf16"
    out = wrapped.forward_layers(_batch(16), 1)
    assert out[1].patches.shape == (2, 14, 8) and out[1].prefix is not None and out[1].prefix.shape == (2, 3, 8)
    assert out[1].patches.dtype == torch.bfloat16  # left in the precision it was given in


class NoDim(nn.Module):
    depth, num_heads, num_prefix_tokens = 1, 1, 0

    def forward_blocks(self, images: torch.Tensor, blocks: Sequence[int]) -> list[torch.Tensor]:
        return []


class Intermediates(nn.Module):
    def forward_intermediates(self, images: torch.Tensor) -> list[torch.Tensor]:
        return []


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (nn.Linear(2, 2), "Linear is neither a timm ViT (no forward_intermediates) nor a BlockTokensModule "
                          "(aimbench.adapters.module_family; no forward_blocks, depth, dim, num_heads/heads, num_prefix_tokens)"),
        (NoDim(), "NoDim does not implement BlockTokensModule (aimbench.adapters.module_family): no dim"),
        (Intermediates(), "Intermediates has forward_intermediates but is not a timm ViT: no blocks, embed_dim; "
                          "implement BlockTokensModule (aimbench.adapters.module_family) instead"),
        ("vit_tiny_patch16_224", "model must be a torch.nn.Module, got str"),
    ],
)  # fmt: skip
def test_a_module_of_neither_kind_is_one_line_naming_what_it_lacks(model: Any, message: str) -> None:
    with pytest.raises(UserError) as error:
        backbone_from_module(model, name="x", transform=TINY_TRANSFORM)
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("transform", "message"),
    [
        (None, r"^the transform needs image_size, mean, std: the preprocessing the weights were trained with"),
        ({"image_size": 16, "mean": (0.5,) * 3}, r"^the transform needs std:"),
        ({**TINY_TRANSFORM, "size": 16}, r"^unknown transform field\(s\) size; use image_size, "),
        ({**TINY_TRANSFORM, "resize_size": 8}, r"^bad transform: resize_size 8 must be at least image_size 16$"),
        ({**TINY_TRANSFORM, "resize_size": 20, "crop_pct": 0.9}, r"^give the transform's resize_size or its crop_pct"),
        ({**TINY_TRANSFORM, "std": (0.5, 0.0, 0.5), "interpolation": "lanczos"}, r"^bad transform: interpolation must be one of "),
        ({**TINY_TRANSFORM, "mean": (0.5, 0.5)}, r"^transform mean must be three numbers"),
        ({**TINY_TRANSFORM, "image_size": 16.0}, r"^transform image_size must be an int, got 16\.0$"),
        ({**TINY_TRANSFORM, "resize_size": "20"}, r"^transform resize_size must be an int, got '20'$"),
    ],
)
def test_a_transform_that_does_not_describe_an_input_is_refused(transform: Any, message: str) -> None:
    with pytest.raises(UserError, match=message):
        backbone_from_module(TinyBlocks(), name="x", transform=transform)


def test_bad_protocol_values_and_outputs_are_user_errors() -> None:
    module: Any = TinyBlocks()
    module.num_prefix_tokens = 2  # two cls tokens: no layout names them
    with pytest.raises(UserError, match="^TinyBlocks: 2 prefix tokens with 0 registers is not at most one cls token followed by"):
        backbone_from_module(module, name="x", transform=TINY_TRANSFORM)
    module.num_reg_tokens = 3
    with pytest.raises(UserError, match="^TinyBlocks: 2 prefix tokens with 3 registers is not"):
        backbone_from_module(module, name="x", transform=TINY_TRANSFORM)
    del module.num_reg_tokens
    module.depth = 0
    with pytest.raises(UserError, match="^TinyBlocks.depth must be an int of at least 1, got 0$"):
        backbone_from_module(module, name="x", transform=TINY_TRANSFORM)
    module.depth = 3
    module.num_prefix_tokens, module.dim = 1, 7
    with pytest.raises(UserError, match="^TinyBlocks: dim 7 is not divisible by num_heads 2$"):
        backbone_from_module(module, name="x", transform=TINY_TRANSFORM)
    module.dim = 6  # the tokens it returns are 8 wide
    wrapped = backbone_from_module(module, name="x", transform=TINY_TRANSFORM)
    with pytest.raises(UserError, match=r"^TinyBlocks.forward_blocks returned \[\(2, 17, 8\) float32 cpu\]; expected one "):
        wrapped.forward_layers(_batch(16), 0)
    with pytest.raises(UserError, match="needs a name"):
        backbone_from_module(TinyBlocks(), name=" ", transform=TINY_TRANSFORM)
    with pytest.raises(UserError, match="^probe_tokens must be distinct values among patch_mean, cls"):
        backbone_from_module(TinyBlocks(), name="x", transform=TINY_TRANSFORM, probe_tokens=["cls", "cls"])
    with pytest.raises(UserError, match="window 'best' must be a non-empty list of block indices in 0..2"):
        backbone_from_module(TinyBlocks(), name="x", transform=TINY_TRANSFORM, windows={"best": [3]})


def test_a_wrapped_spec_is_not_rebuilt_without_its_module() -> None:
    wrapped = backbone_from_module(TinyBlocks(), name="tiny-blocks", transform=TINY_TRANSFORM)
    with pytest.raises(UserError, match="^backbone 'tiny-blocks' \\(module\\) cannot be built from its spec alone"):
        build_backbone(wrapped.spec)
