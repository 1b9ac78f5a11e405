"""The open_clip adapter: shipped CLIP/DFN cards, the contract on a tiny tower, strict file loading, card checks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import open_clip
import pytest
import torch
from conftest import micro_card_header, run_cli, write_card
from safetensors.torch import save_file

from aimbench.adapters import load_backbone
from aimbench.adapters.open_clip_family import OpenClipBackbone, _create_visual, check_against_card, tag_config
from aimbench.cards.registry import Registry
from aimbench.errors import CardError, UserError

ARCH = "ViT-B-16-quickgelu"
# A CPU-sized tower (16 px, patch 4, width 32, 3 blocks, 2 heads) and a tiny text tower that is built and dropped.
VISION = {"image_size": 16, "patch_size": 4, "width": 32, "layers": 3, "head_width": 16}
TEXT = {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}
TINY_ARGS = {"embed_dim": 16, "vision_cfg": VISION, "text_cfg": TEXT}
TINY_RESNET_ARGS = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "width": 8}, "text_cfg": TEXT}  # RN50 keeps its stages
NAME = "clip-micro"

VARIANT = """
[variants.{name}]
arch = "{arch}"
weights = {weights}
model_args = {model_args}
{extra}
depth = {depth}
dim = {dim}
heads = {heads}
cls_token = true
"""


def inline_toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {inline_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def clip_card(
    root: Path, weights: str = "random", arch: str = ARCH, model_args: dict | None = None, extra: str = "", **dims: int
) -> Registry:
    values = {"depth": 3, "dim": 32, "heads": 2, **dims}
    body = VARIANT.format(
        name=NAME, arch=arch, weights=json.dumps(weights), model_args=inline_toml(model_args or TINY_ARGS), extra=extra, **values
    )
    header = micro_card_header("cliptest").replace('adapter = "timm"', 'adapter = "open_clip"')
    write_card(root, "backbones", "cliptest", header + body)
    return Registry.load([root])


def reference_clip(seed: int = 3) -> torch.nn.Module:
    """The tiny CLIP built by open_clip directly (full model), with its own init."""
    torch.manual_seed(seed)
    return open_clip.create_model(ARCH, **TINY_ARGS).eval()


def images(batch: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


# --- every shipped card describes the network it builds ------------------------------------

SHIPPED = {name: spec for name, spec in Registry.load().backbones.items() if spec.adapter == "open_clip"}
EXPECTED = {  # name -> (arch, weights, licence)
    "dfn2b-vitb16": ("ViT-B-16-quickgelu", "open_clip:dfn2b", "apple-amlr"),
    "dfn2b-vitl14": ("ViT-L-14-quickgelu", "open_clip:dfn2b", "apple-amlr"),
    "dfn5b-vith14": ("ViT-H-14-quickgelu", "open_clip:dfn5b", "apple-amlr"),
    "dfn5b-vith14-378": ("ViT-H-14-378-quickgelu", "open_clip:dfn5b", "apple-amlr"),
    "openai-clip-vitb16": ("ViT-B-16-quickgelu", "open_clip:openai", "MIT"),
    "openai-clip-vitl14": ("ViT-L-14-quickgelu", "open_clip:openai", "MIT"),
}


def test_shipped_clip_cards_are_the_dfn_and_openai_towers() -> None:
    assert {name: (s.arch, s.weights, s.license) for name, s in SHIPPED.items()} == EXPECTED


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_card_matches_its_tower_and_tag_on_the_meta_device(name: str, no_network: None) -> None:
    spec = SHIPPED[name]
    visual = _create_visual(spec, "meta")
    assert {p.device.type for p in visual.parameters()} == {"meta"}  # nothing was materialised
    check_against_card(spec, visual)
    cfg = tag_config(spec, spec.weights.removeprefix("open_clip:"))  # quick_gelu, mean, std, interpolation
    assert cfg["hf_hub"]  # fetched through the Hugging Face cache, never a bare URL
    assert spec.preprocess.resize_size == spec.preprocess.image_size  # open_clip resizes to the crop size
    assert spec.prefix_layout == ("cls",)


# --- the contract on a tiny random-init tower -----------------------------------------------


@pytest.fixture
def tiny(tmp_path: Path) -> OpenClipBackbone:
    backbone = load_backbone(NAME, registry=clip_card(tmp_path / "cards"))
    assert isinstance(backbone, OpenClipBackbone)
    return backbone


def test_tiny_tower_follows_the_backbone_contract(tiny: OpenClipBackbone) -> None:
    assert not tiny.model.training and not any(p.requires_grad for p in tiny.model.parameters())
    assert not hasattr(tiny.model, "token_embedding") and isinstance(tiny.model, open_clip.transformer.VisionTransformer)
    for layers in ([0, 1, 2], [1], [2]):
        out = tiny.forward_layers(images(), layers)
        assert list(out) == [o.layer for o in out.values()] == layers
        for tokens in out.values():
            assert tuple(tokens.patches.shape) == (3, 16, 32)
            assert tuple(tokens.prefix.shape) == (3, 1, 32)
    assert tiny.provenance.as_dict() == {"source": "block output (residual stream)", "norm_applied": False, "prefix_layout": ["cls"]}
    assert tiny.has_cls_token and tiny.spec.probe_tokens == ("patch_mean", "cls")
    with pytest.raises(UserError, match=r"block 3 out of range .*0\.\.2 or -3\.\.-1"):
        tiny.forward_layers(images(), [2, 3])


def test_random_init_is_deterministic_and_leaves_the_global_rng_alone(tmp_path: Path) -> None:
    registry = clip_card(tmp_path / "cards")
    torch.manual_seed(5)
    before = torch.get_rng_state()
    first = load_backbone(NAME, registry=registry)
    assert torch.equal(torch.get_rng_state(), before)
    second = load_backbone(NAME, registry=registry)
    assert first.weights == second.weights and first.weights.id == "random-init:seed0"
    a, b = (bb.forward_layers(images(), [0, 2]) for bb in (first, second))
    assert a.keys() == b.keys() and all(torch.equal(a[k].patches, b[k].patches) and torch.equal(a[k].prefix, b[k].prefix) for k in a)


def _manual_blocks(visual: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The tower run by hand: patchify, prepend the class token, add positions, ln_pre, blocks."""
    with torch.no_grad():
        x = visual.conv1(x).flatten(2).transpose(1, 2)
        cls = visual.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = visual.ln_pre(torch.cat([cls, x], dim=1) + visual.positional_embedding)
        outputs = []
        for block in visual.transformer.resblocks:
            x = block(x)
            outputs.append(x)
    return outputs


def test_block_outputs_match_open_clips_own_forward(tiny: OpenClipBackbone) -> None:
    visual, x = tiny.model, images()
    out = tiny.forward_layers(x, [0, 1, 2])
    for tokens, manual in zip(out.values(), _manual_blocks(visual, x)):
        assert torch.allclose(torch.cat([tokens.prefix, tokens.patches], dim=1), manual, atol=1e-6)
    visual.output_tokens = True  # open_clip's forward then also returns ln_post(tokens) before pooling
    try:
        with torch.no_grad():
            pooled, patch_tokens = visual(x)
    finally:
        visual.output_tokens = False
    last = out[2]
    with torch.no_grad():
        assert torch.allclose(visual.ln_post(last.patches), patch_tokens, atol=1e-6)
        assert torch.allclose(visual.ln_post(last.prefix[:, 0]) @ visual.proj, pooled, atol=1e-6)  # cls pooling


# --- weights files ----------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["visual", "full"])
def test_state_dict_file_loads_strictly_and_reproduces_outputs(tmp_path: Path, layout: str) -> None:
    source = reference_clip()
    state = source.visual.state_dict() if layout == "visual" else source.state_dict()
    path = tmp_path / f"clip_micro_{layout}.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    backbone = load_backbone(NAME, registry=clip_card(tmp_path / "cards", str(path)))
    assert backbone.weights.id == f"file:{path.name}"
    assert backbone.weights.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert {p.device.type for p in backbone.model.parameters()} == {"cpu"}
    x = images()
    with torch.no_grad():
        expected = source.visual.forward_intermediates(x, indices=[1, 2], output_fmt="NLC", intermediates_only=True)
    got = backbone.forward_layers(x, [1, 2])
    assert all(torch.equal(e, g.patches) for e, g in zip(expected["image_intermediates"], got.values()))


def test_file_weights_in_bf16_are_materialised_in_bf16(tmp_path: Path) -> None:
    path = tmp_path / "clip_micro.safetensors"
    save_file({k: v.contiguous() for k, v in reference_clip().visual.state_dict().items()}, str(path))
    backbone = load_backbone(NAME, registry=clip_card(tmp_path / "cards", str(path)), dtype="bf16")
    assert {p.dtype for p in backbone.model.parameters()} == {torch.bfloat16}
    assert backbone.forward_layers(images(), [2])[2].patches.dtype == torch.bfloat16


@pytest.mark.parametrize("damage", ["missing", "unexpected"])
def test_files_that_do_not_fit_are_refused_with_the_key(tmp_path: Path, damage: str) -> None:
    state = {k: v.contiguous() for k, v in reference_clip().visual.state_dict().items()}
    key = "transformer.resblocks.1.mlp.c_fc.weight" if damage == "missing" else "attn_pool.query"
    if damage == "missing":
        del state[key]
    else:
        state[key] = torch.zeros(4, 16)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(UserError, match=f"{damage}: {key}"):
        load_backbone(NAME, registry=clip_card(tmp_path / "cards", str(tmp_path / "bad.safetensors")))


def test_missing_open_clip_tag_offline_is_one_line_saying_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError) as info:
        load_backbone("dfn2b-vitb16")
    message = str(info.value)
    assert "\n" not in message and not isinstance(info.value, CardError)
    assert "not in the Hugging Face cache" in message and "HF_HUB_OFFLINE" in message and "--weights PATH" in message
    assert "apple/DFN2B-CLIP-ViT-B-16" in message


# --- cards that do not describe the tower -----------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"depth": 4}, "depth", "card says 4 but ViT-B-16-quickgelu has 3"),
        ({"dim": 64, "heads": 2}, "dim", "card says 64"),
        ({"heads": 4}, "heads", "card says 4"),
        ({"arch": "ViT-B-61"}, "arch", "not a built-in open_clip model"),
        ({"arch": "RN50", "model_args": TINY_RESNET_ARGS}, "arch", "not an open_clip ViT"),
        ({"model_args": {**TINY_ARGS, "vision_cfg": {**VISION, "not_a_key": 1}}}, "model_args", "not_a_key"),
        ({"model_args": {**TINY_ARGS, "precision": "bf16"}}, "model_args", "not model config keys"),
        ({"model_args": {**TINY_ARGS, "vision_cfg": {**VISION, "image_size": 32}}}, "preprocess.image_size", "card says 16"),
        ({"weights": "open_clip:no_such_tag"}, "weights", "unknown open_clip tag"),
        ({"weights": "open_clip:dfn2b"}, "preprocess.mean", "open_clip tag 'dfn2b' uses"),
        ({"weights": "open_clip:openai", "arch": "ViT-B-16"}, "arch", "quick_gelu=True"),
        ({"weights": "timm"}, "weights", "not timm"),
    ],
)
def test_card_errors_name_the_field(tmp_path: Path, change: dict, field: str, problem: str, no_network: None) -> None:
    change = dict(change)
    dims = {k: change.pop(k) for k in ("depth", "dim", "heads") if k in change}
    registry = clip_card(tmp_path, **change, **dims)
    with pytest.raises(CardError, match=problem) as info:
        load_backbone(NAME, registry=registry)
    assert info.value.field == f"variants.{NAME}.{field}"


# --- the real CLI -----------------------------------------------------------------------------


def test_eval_through_the_cli_writes_one_record(tmp_path: Path) -> None:
    cards, results = tmp_path / "cards", tmp_path / "results"
    clip_card(cards)
    proc = run_cli(
        "eval", "-b", NAME, "-t", "digits", "--cards", str(cards), "--results", str(results), "--limit", "40", "--epochs", "2", "--protocol", "aim-v1"
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "initialized randomly" not in proc.stderr  # open_clip's build chatter is not passed on
    [record] = (results / "runs").glob("*.json")
    data = json.loads(record.read_text())
    assert data["backbone"] == NAME and data["weights_id"] == "random-init:seed0"
    assert data["backbone_info"]["adapter"] == "open_clip"
    features = data["backbone_info"]["features"]
    assert features == {"source": "block output (residual stream)", "norm_applied": False, "prefix_layout": ["cls"]}
    assert sorted(layer["layer"] for layer in data["layers"]) == [0, 1, 2]
