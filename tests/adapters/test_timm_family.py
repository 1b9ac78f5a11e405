"""The timm adapter: the backbone contract, raw block outputs, and cards checked against models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import micro_card_header, write_card

from aimbench.adapters import load_backbone
from aimbench.adapters.timm_family import TimmBackbone, _create, check_against_card
from aimbench.cards.registry import Registry
from aimbench.errors import CardError, UserError

# name -> (image size, expected prefix layout); micro-* come from the tiny_cards fixture,
# vit-tiny-* are shipped in backbones/tiny.toml.
CONTRACT_CASES = {
    "micro-cls": (16, ("cls",)),
    "micro-patches": (16, ()),
    "vit-tiny-cls": (32, ("cls",)),
    "vit-tiny-reg": (32, ("register",) * 4),
}


@pytest.fixture
def registry(tiny_cards: Path) -> Registry:
    return Registry.load([tiny_cards])


def _images(size: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _manual_block_outputs(model: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Run a timm ViT by hand and return every block's raw output (no final norm)."""
    with torch.no_grad():
        x = model.patch_embed(images)
        x = model._pos_embed(x)
        x = model.patch_drop(x)
        x = model.norm_pre(x)
        outputs = []
        for block in model.blocks:
            x = block(x)
            outputs.append(x)
    return outputs


@pytest.mark.parametrize("name", sorted(CONTRACT_CASES))
def test_forward_layers_follows_the_backbone_contract(registry: Registry, name: str) -> None:
    size, layout = CONTRACT_CASES[name]
    backbone = load_backbone(name, registry=registry)
    assert isinstance(backbone, TimmBackbone)
    assert not backbone.model.training
    assert all(not p.requires_grad for p in backbone.model.parameters())

    batch, patch = 3, 4
    n_patches = (size // patch) ** 2
    layers = [0, backbone.depth - 1] if name.startswith("vit-tiny") else [0, 1, 2]
    out = backbone.forward_layers(_images(size, batch), layers)

    assert list(out) == [o.layer for o in out.values()] == layers
    for tokens in out.values():
        assert tokens.patches.shape == (batch, n_patches, backbone.dim)
        if layout:
            assert tokens.prefix is not None
            assert tokens.prefix.shape == (batch, len(layout), backbone.dim)
        else:
            assert tokens.prefix is None

    provenance = backbone.provenance
    assert provenance.norm_applied is False
    assert provenance.prefix_layout == layout == backbone.spec.prefix_layout
    assert provenance.as_dict()["prefix_layout"] == list(layout)
    assert backbone.has_cls_token == ("cls" in layout)


def test_shipped_tiny_cards_declare_the_expected_shapes(registry: Registry) -> None:
    reg = load_backbone("vit-tiny-reg", registry=registry)
    assert (reg.depth, reg.dim, reg.heads, reg.spec.cls_token, reg.spec.registers) == (6, 96, 3, False, 4)
    assert reg.model.num_prefix_tokens == 4
    cls = load_backbone("vit-tiny-cls", registry=registry)
    assert cls.model.num_prefix_tokens == 1


@pytest.mark.parametrize("name", sorted(CONTRACT_CASES))
def test_features_are_raw_block_outputs_without_final_norm(registry: Registry, name: str) -> None:
    size, layout = CONTRACT_CASES[name]
    backbone = load_backbone(name, registry=registry)
    model = backbone.model
    images = _images(size, batch=2, seed=1)
    manual = _manual_block_outputs(model, images)
    n_prefix = len(layout)
    assert model.num_prefix_tokens == n_prefix
    final_norm = model.fc_norm if isinstance(model.norm, torch.nn.Identity) else model.norm
    assert isinstance(final_norm, torch.nn.LayerNorm)

    layers = list(range(backbone.depth))
    out = backbone.forward_layers(images, layers)
    assert len(out) == backbone.depth
    for tokens, raw in zip(out.values(), manual):
        assert torch.allclose(tokens.patches, raw[:, n_prefix:], atol=1e-5, rtol=1e-5)
        if n_prefix:
            assert torch.allclose(tokens.prefix, raw[:, :n_prefix], atol=1e-5, rtol=1e-5)
        # and they are not the final-normed tokens (avg-pool ViTs keep their final LayerNorm
        # in ``fc_norm`` and have ``norm = Identity``)
        with torch.no_grad():
            normed = final_norm(raw)
        assert not torch.allclose(tokens.patches, normed[:, n_prefix:], atol=1e-3)

    # asking for a subset gives the same tensors as the full sweep
    subset = backbone.forward_layers(images, [1])
    assert list(subset) == [1] and subset[1].layer == 1
    assert torch.allclose(subset[1].patches, manual[1][:, n_prefix:], atol=1e-5, rtol=1e-5)


def test_block_outputs_differ_between_layers(registry: Registry) -> None:
    backbone = load_backbone("micro-cls", registry=registry)
    out = backbone.forward_layers(_images(16), [0, 1, 2])
    assert not torch.allclose(out[0].patches, out[1].patches)
    assert not torch.allclose(out[1].patches, out[2].patches)


@pytest.mark.parametrize(
    ("layers", "message"),
    [([], "no blocks asked"), ([3], "block 3 out of range"), ([0, 3], "block 3 out of range"), ([-4], "block -4 out of range"),
     (["first"], "unknown block name 'first'"), ([True], "not an index")],
)  # fmt: skip
def test_forward_layers_rejects_bad_layer_lists(registry: Registry, layers: list, message: str) -> None:
    backbone = load_backbone("micro-cls", registry=registry)
    with pytest.raises(UserError, match=message):
        backbone.forward_layers(_images(16), layers)


def test_transform_makes_normalised_rgb_at_the_card_size(registry: Registry) -> None:
    from PIL import Image

    backbone = load_backbone("micro-cls", registry=registry)
    grey = Image.new("L", (24, 20), color=255)
    tensor = backbone.transform()(grey)
    assert tensor.shape == (3, 16, 16)
    assert tensor.dtype == torch.float32
    # white -> 1.0 -> (1 - 0.5) / 0.5 == 1.0
    assert torch.allclose(tensor, torch.ones_like(tensor))


# --- cards checked against the built model -------------------------------------------------

MICRO_VARIANT = """
[variants.x]
arch = "{arch}"
weights = "random"
model_args = {{ img_size = 16, patch_size = 4, embed_dim = 32, depth = 3, num_heads = 2, reg_tokens = 2{extra_args} }}
depth = {depth}
dim = {dim}
heads = {heads}
cls_token = {cls_token}
registers = {registers}
"""

GOOD = dict(arch="vit_tiny_patch16_224", extra_args="", depth=3, dim=32, heads=2, cls_token="true", registers=2)


def _card_registry(tmp_path: Path, **overrides: object) -> Registry:
    text = micro_card_header("checkfam") + MICRO_VARIANT.format(**{**GOOD, **overrides})
    write_card(tmp_path, "backbones", "checkfam", text)
    return Registry.load([tmp_path])


def test_matching_card_builds(tmp_path: Path) -> None:
    backbone = load_backbone("x", registry=_card_registry(tmp_path))
    assert backbone.spec.prefix_layout == ("cls", "register", "register")
    out = backbone.forward_layers(_images(16), [2])
    assert out[2].prefix.shape == (2, 3, 32)


@pytest.mark.parametrize(
    ("field", "value", "declared", "actual"),
    [
        ("depth", 4, "4", "3"),
        ("dim", 64, "64", "32"),
        ("heads", 4, "4", "2"),
        ("cls_token", "false", "False", "True"),
        ("registers", 0, "0", "2"),
    ],
)
def test_card_disagreeing_with_model_names_the_field(tmp_path: Path, field: str, value: object, declared: str, actual: str) -> None:
    registry = _card_registry(tmp_path, **{field: value})
    with pytest.raises(CardError) as info:
        load_backbone("x", registry=registry)
    assert info.value.field == f"variants.x.{field}"
    assert info.value.path == str(tmp_path / "backbones" / "checkfam.toml")
    message = str(info.value)
    assert f"variants.x.{field}" in message
    assert f"card says {declared}" in message and f"has {actual}" in message


def test_unknown_arch_is_a_card_error(tmp_path: Path) -> None:
    registry = _card_registry(tmp_path, arch="no_such_arch_xyz")
    with pytest.raises(CardError) as info:
        load_backbone("x", registry=registry)
    assert info.value.field == "variants.x.arch"


def test_unknown_model_arg_is_a_card_error(tmp_path: Path) -> None:
    registry = _card_registry(tmp_path, extra_args=", not_a_vit_option = 1")
    with pytest.raises(CardError) as info:
        load_backbone("x", registry=registry)
    assert info.value.field == "variants.x.model_args"


def test_check_against_card_rejects_a_model_without_blocks(registry: Registry) -> None:
    spec = registry.backbone("micro-cls")
    with pytest.raises(CardError) as info:
        check_against_card(spec, torch.nn.Linear(2, 2))
    assert info.value.field == "variants.micro-cls.arch"


# --- every shipped card describes the network it builds ------------------------------------

SHIPPED = {name: spec for name, spec in Registry.load().backbones.items() if spec.adapter == "timm"}


def test_shipped_cards_include_all_families() -> None:
    assert {"vit-tiny-cls", "vit-tiny-reg", "dinov2-vits14", "dinov2-vitg14-reg"} <= set(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_card_matches_its_architecture(name: str, no_network: None) -> None:
    spec = SHIPPED[name]
    with torch.device("meta"):
        model = _create(spec, pretrained=False)
    assert next(model.parameters()).device.type == "meta"  # nothing was materialised
    check_against_card(spec, model)
    assert model.num_prefix_tokens == len(spec.prefix_layout)
    assert model.patch_embed.img_size == (spec.preprocess.image_size,) * 2
