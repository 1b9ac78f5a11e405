"""Conformance of every shipped backbone card: a tiny random-init variant of each builds offline,
honours the backbone contract, is deterministic, and its last layer agrees with the family's own
forward. The tiny variant keeps the card's architecture (its timm/open_clip arch and model_args,
its token layout) and shrinks only width, depth and resolution."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from conftest import run_cli, write_card
from PIL import Image
from safetensors import safe_open

from aimbench.adapters import build_backbone
from aimbench.adapters.base import Backbone
from aimbench.adapters.export import export_features
from aimbench.cards.backbone_card import BackboneSpec
from aimbench.cards.registry import Registry
from aimbench.errors import UserError
from aimbench.models.aim import PRESETS

SIZE, PATCH, WIDTH, DEPTH, HEADS = 32, 8, 96, 2, 2
SHIPPED = Registry.load().backbones
TINY_TEXT = {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}


def tiny_variant(spec: BackboneSpec) -> BackboneSpec:
    """The card's variant at CPU size, random weights."""
    small = replace(spec.preprocess, image_size=SIZE, resize_size=SIZE)
    if spec.adapter == "aim":  # AIM presets fix the shape; aim-micro is the same network, smaller
        config = PRESETS["aim-micro"]
        dims = {"depth": config.depth, "dim": config.width, "heads": config.heads}
        return replace(spec, arch="aim-micro", weights="random", preprocess=small, **dims)
    if spec.adapter == "open_clip":
        vision = {"image_size": SIZE, "patch_size": PATCH, "width": WIDTH, "layers": DEPTH, "head_width": WIDTH // HEADS}
        args = {**spec.model_args, "embed_dim": 16, "vision_cfg": vision, "text_cfg": TINY_TEXT}
    else:
        args = {**spec.model_args, "img_size": SIZE, "patch_size": PATCH, "embed_dim": WIDTH, "depth": DEPTH, "num_heads": HEADS}
    return replace(spec, weights="random", model_args=args, depth=DEPTH, dim=WIDTH, heads=HEADS, preprocess=small)


def family_output(backbone: Backbone, images: torch.Tensor) -> torch.Tensor:
    """What the family's own forward returns for the final block (after its final norm)."""
    if backbone.spec.adapter == "timm":
        return backbone.model.forward_features(images)  # all tokens, final norm applied
    return backbone.model(images)  # open_clip: ln_post, pooling, projection; AIM: post-trunk norm


def from_last_layer(backbone: Backbone, patches: torch.Tensor, prefix: torch.Tensor | None) -> torch.Tensor:
    """The family output recomputed from our raw last-layer tokens."""
    model = backbone.model
    tokens = patches if prefix is None else torch.cat([prefix, patches], dim=1)
    if backbone.spec.adapter == "timm":
        return model.norm(tokens)
    if backbone.spec.adapter == "open_clip":
        pooled, _ = model._global_pool(model.ln_post(tokens))
        return pooled @ model.proj
    return model.trunk.post_trunk_norm(tokens)


def images(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_tiny_variant_of_every_card_conforms(name: str, no_network: None) -> None:
    spec = tiny_variant(SHIPPED[name])
    backbone = build_backbone(spec)
    x = images()

    layers = list(range(backbone.depth))
    out = backbone.forward_layers(x, layers)
    patch = PRESETS["aim-micro"].patch_size if spec.adapter == "aim" else PATCH
    assert list(out) == [o.layer for o in out.values()] == layers
    for tokens in out.values():
        assert tokens.patches.shape == (2, (SIZE // patch) ** 2, spec.dim)
        if spec.prefix_layout:
            assert tokens.prefix is not None and tokens.prefix.shape == (2, len(spec.prefix_layout), spec.dim)
        else:
            assert tokens.prefix is None
    last = out[backbone.depth - 1]
    assert not torch.equal(out[0].patches, last.patches)

    # deterministic: the same weights on a second build, the same tokens on a second pass
    again = build_backbone(spec)
    assert again.weights.sha256 == backbone.weights.sha256
    repeat = again.forward_layers(x, [backbone.depth - 1])[backbone.depth - 1]
    assert torch.equal(repeat.patches, last.patches)

    with torch.no_grad():
        expected = family_output(backbone, x)
        ours = from_last_layer(backbone, last.patches, last.prefix)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_every_family_ships_a_card() -> None:
    families = {spec.family for spec in SHIPPED.values()}
    assert {"aim", "aimv2", "dinov2", "mae", "beit", "clip", "dino"} <= families
    for spec in SHIPPED.values():
        assert spec.license and spec.weights


# --- BEiT: the self-supervised unilm release layout loads through the shipped cards ----------


def unilm_checkpoint(spec: BackboneSpec, path: Path, version: int) -> torch.nn.Module:
    """Write a file laid out like Microsoft's BEiT pre-training checkpoints for a tiny variant of
    ``spec``: {"model": ...} with the trunk's keys, the relative-position index buffer, the mask
    token, the visual-token classifier and (BEiT v2) the extra cls pre-training blocks."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        source = timm.create_model(spec.arch, pretrained=False, num_classes=0, **spec.model_args).eval()
    state = dict(source.state_dict())
    window = source.patch_embed.grid_size
    state["rel_pos_bias.relative_position_index"] = torch.zeros(window[0] * window[1] + 1, window[0] * window[1] + 1, dtype=torch.long)
    state["mask_token"] = torch.randn(1, 1, spec.dim)
    state["lm_head.weight"], state["lm_head.bias"] = torch.randn(64, spec.dim), torch.randn(64)
    if version == 2:
        state.update({f"cls_pt_layers.0.{k}": v.clone() for k, v in source.blocks[0].state_dict().items()})
    torch.save({"model": state, "epoch": 799}, path)
    return source


@pytest.mark.parametrize(("name", "version"), [("beit-vitl16-pt22k", 1), ("beitv2-vitb16-pt1k", 2)])
def test_beit_unilm_release_loads_strictly_through_the_card(name: str, version: int, tmp_path: Path) -> None:
    spec = tiny_variant(SHIPPED[name])
    path = tmp_path / f"{name}.pth"
    source = unilm_checkpoint(spec, path, version)

    backbone = build_backbone(spec, weights=str(path))
    assert backbone.weights.id == f"file:{path.name}"
    x = images(seed=3)
    with torch.no_grad():
        expected = source.forward_intermediates(
            x, indices=[0, 1], norm=False, output_fmt="NLC", intermediates_only=True, return_prefix_tokens=True
        )
    out = backbone.forward_layers(x, [0, 1])
    for tokens, (patches, prefix) in zip(out.values(), expected):
        torch.testing.assert_close(tokens.patches, patches)
        torch.testing.assert_close(tokens.prefix, prefix)

    # without the card's drop_keys, the pre-training-only tensors are reported, not ignored
    with pytest.raises(UserError, match=r"\d+ unexpected: (cls_pt_layers|lm_head)\."):
        build_backbone(replace(spec, drop_keys=()), weights=str(path))


# --- `aimbench features` on a tiny variant of every family, through the real CLI ---------------


def toml_value(value: object) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def tiny_card(spec: BackboneSpec) -> str:
    """A user card holding the tiny variant of ``spec`` under the name ``<name>-tiny``."""
    pre = spec.preprocess
    fields = {
        "arch": spec.arch,
        "weights": spec.weights,
        "depth": spec.depth,
        "dim": spec.dim,
        "heads": spec.heads,
        "cls_token": spec.cls_token,
        "registers": spec.registers,
        "probe_tokens": list(spec.probe_tokens),
        "preprocess": {
            "image_size": pre.image_size,
            "resize_size": pre.resize_size,
            "interpolation": pre.interpolation,
            "mean": list(pre.mean),
            "std": list(pre.std),
            "resize_mode": pre.resize_mode,
        },
    }
    if spec.model_args:
        fields["model_args"] = spec.model_args
    body = "\n".join(f"{key} = {toml_value(value)}" for key, value in fields.items())
    header = f'family = "{spec.family}"\nadapter = "{spec.adapter}"\nlicense = "{spec.license}"\n'
    return f"{header}\n[variants.{spec.name}-tiny]\n{body}\n"


ONE_PER_FAMILY = sorted({spec.family: name for name, spec in sorted(SHIPPED.items())}.values())
ONE_PER_ADAPTER = sorted({spec.adapter: name for name, spec in sorted(SHIPPED.items())}.values())


def write_images(folder: Path) -> list[Path]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40 + i, 36, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return sorted(folder.iterdir())


def check_features_file(path: Path, spec: BackboneSpec, images: int = 3) -> dict[str, str]:
    with safe_open(str(path), "pt") as handle:
        keys, metadata = set(handle.keys()), handle.metadata()
        last = handle.get_tensor(f"block{spec.depth - 1}.patches")
    expected = {f"block{i}.patches" for i in range(spec.depth)}
    if spec.prefix_layout:
        expected |= {f"block{i}.prefix" for i in range(spec.depth)}
    assert keys == expected, spec.name
    assert last.shape[0] == images and last.shape[2] == spec.dim
    assert metadata["weights_id"].startswith("random-init")
    return metadata


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_features_export_works_for_every_family(name: str, tmp_path: Path) -> None:
    spec = tiny_variant(SHIPPED[name])
    output = tmp_path / "features.safetensors"
    export_features(build_backbone(spec), write_images(tmp_path / "imgs"), list(range(spec.depth)), output, batch_size=2)
    assert check_features_file(output, spec)["backbone"] == name


@pytest.mark.e2e
def test_cli_features_works_for_every_adapter(tmp_path: Path) -> None:
    """One real ``aimbench features`` run per adapter, on tiny variants written as user cards."""
    folder = tmp_path / "imgs"
    write_images(folder)
    for name in ONE_PER_ADAPTER:
        spec = tiny_variant(SHIPPED[name])
        write_card(tmp_path / "cards", "backbones", spec.family, tiny_card(spec))
        output = tmp_path / f"{name}.safetensors"
        proc = run_cli(
            "features", f"{name}-tiny", "-i", str(folder), "--layers", "all", "-o", str(output), "--cards", str(tmp_path / "cards")
        )
        assert proc.returncode == 0, proc.stderr
        assert check_features_file(output, spec)["backbone"] == f"{name}-tiny"
