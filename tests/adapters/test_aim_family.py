"""The AIM adapter: contract, strict loading of Apple-layout files, hub sources, card checks."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import micro_card_header, run_cli, write_card

from aimbench.adapters import load_backbone
from aimbench.cards.registry import Registry
from aimbench.errors import CardError, UserError
from aimbench.models.aim import AIM, LN_EPS_METADATA, PRESETS, build_aim
from aimbench.pretrain.recipe import IMAGE_SIZES

VARIANT = """
[variants.{name}]
arch = "{arch}"
weights = {weights}
{extra}
depth = {depth}
dim = {dim}
heads = {heads}
cls_token = false
"""


def aim_card(root: Path, weights: str, name: str = "aim-micro-x", arch: str = "aim-micro", extra: str = "", **dims: int) -> Registry:
    config = PRESETS[arch] if arch in PRESETS else PRESETS["aim-micro"]
    values = {"depth": config.depth, "dim": config.width, "heads": config.heads, **dims}
    body = VARIANT.format(name=name, arch=arch, weights=json.dumps(weights), extra=extra, **values)
    write_card(root, "backbones", "aimtest", micro_card_header("aimtest").replace('adapter = "timm"', 'adapter = "aim"') + body)
    return Registry.load([root])


def apple_layout_file(path: Path, seed: int = 3) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(seed)
    model = build_aim("aim-micro").eval()
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, path)
    return path, model


def test_shipped_aim_cards_match_their_presets() -> None:
    registry = Registry.load()
    names = {n for n, s in registry.backbones.items() if s.adapter == "aim"}
    assert names == set(PRESETS)  # every pre-training preset is a backbone (its trunk evaluates under its name)
    sha_prefixes = {"aim-600m": "0d6f6b8f", "aim-1b": "d254ecd3", "aim-3b": "8475ce4e", "aim-7b": "184ed94c"}
    for name, prefix in sha_prefixes.items():
        spec = registry.backbone(name)
        assert spec.weights.startswith("hf:apple/AIM/") and spec.sha256 == prefix and spec.license == "apple-amlr"
        assert (spec.depth, spec.dim, spec.heads) == (PRESETS[name].depth, PRESETS[name].width, PRESETS[name].heads)
        assert (spec.preprocess.image_size, spec.preprocess.resize_size, spec.preprocess.interpolation) == (224, 256, "bicubic")
    for name in ("aim-tiny", "aim-micro"):  # the CPU presets: random init, at the resolution their pre-training uses
        spec = registry.backbone(name)
        assert (spec.weights, spec.depth, spec.dim, spec.heads) == ("random", PRESETS[name].depth, PRESETS[name].width, PRESETS[name].heads)
        assert spec.preprocess.image_size == IMAGE_SIZES[name]


def test_tiny_aim_follows_the_backbone_contract() -> None:
    torch.manual_seed(5)
    before = torch.get_rng_state()
    backbone = load_backbone("aim-tiny")
    assert torch.equal(torch.get_rng_state(), before)
    assert load_backbone("aim-tiny").weights == backbone.weights  # deterministic random init
    outs = backbone.forward_layers(torch.randn(2, 3, 32, 32), [0, 5])
    assert [(b, o.layer, tuple(o.patches.shape), o.prefix) for b, o in outs.items()] == [
        (0, 0, (2, 64, 128), None),
        (5, 5, (2, 64, 128), None),
    ]
    assert backbone.provenance.as_dict() == {"source": "block output (residual stream)", "norm_applied": False, "prefix_layout": []}
    assert not any(p.requires_grad for p in backbone.model.parameters())


def test_apple_layout_file_loads_strictly_onto_meta_built_model(tmp_path: Path) -> None:
    path, source = apple_layout_file(tmp_path / "aim_micro.pth")
    backbone = load_backbone("aim-micro-x", registry=aim_card(tmp_path / "cards", str(path)))
    assert backbone.weights.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert all(p.device.type == "cpu" for p in backbone.model.parameters())
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = source.forward_layers(images, [1, 2])
    got = backbone.forward_layers(images, [1, 2])
    assert all(torch.equal(a, b.patches) for a, b in zip(expected, got.values()))


@pytest.mark.parametrize("damage", ["missing", "unexpected"])
def test_files_that_do_not_fit_are_refused_with_the_key(tmp_path: Path, damage: str) -> None:
    state = build_aim("aim-micro").state_dict()
    if damage == "missing":
        del state["trunk.blocks.1.mlp.fc1.weight"]
        key = "trunk.blocks.1.mlp.fc1.weight"
    else:
        state["head.cls_token"] = torch.zeros(1, 1, 32)
        key = "head.cls_token"
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(UserError, match=f"{damage}: {key}"):
        load_backbone("aim-micro-x", registry=aim_card(tmp_path / "cards", str(tmp_path / "bad.pth")))


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"arch": "aim-42b"}, "arch", "unknown AIM preset"),
        ({"depth": 4}, "depth", "card says 4"),
        ({"extra": "model_args = { patch_size = 8 }"}, "model_args", "no model_args"),
        ({"weights": "timm"}, "weights", "not in timm"),
    ],
)
def test_card_errors_name_the_field(tmp_path: Path, change: dict, field: str, problem: str) -> None:
    registry = aim_card(tmp_path, **{"weights": "random", **change})
    with pytest.raises(CardError, match=problem) as info:
        load_backbone("aim-micro-x", registry=registry)
    assert info.value.field == f"variants.aim-micro-x.{field}"


def hub_cache(root: Path, repo: str, filename: str, payload: Path) -> Path:
    """A Hugging Face hub cache holding one file, laid out as huggingface_hub writes it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    target = folder / "snapshots" / commit / filename
    target.parent.mkdir(parents=True)
    target.write_bytes(payload.read_bytes())
    return root


@pytest.mark.parametrize("checksum_ok", [True, False])
def test_hub_weights_resolve_from_the_cache_offline_and_are_checksummed(tmp_path: Path, checksum_ok: bool) -> None:
    path, _ = apple_layout_file(tmp_path / "aim_micro.pth")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    cache = hub_cache(tmp_path / "hub", "testorg/aimtest", "aim_micro.pth", path)
    prefix = digest[:8] if checksum_ok else ("0" * 8 if not digest.startswith("0" * 8) else "f" * 8)
    cards = tmp_path / "cards"
    aim_card(cards, "hf:testorg/aimtest/aim_micro.pth", extra=f'sha256 = "{prefix}"')
    results = tmp_path / "results"
    proc = run_cli(
        "eval", "-b", "aim-micro-x", "-t", "digits", "--cards", str(cards), "--results", str(results),
        "--limit", "40", "--epochs", "2", "--protocol", "aim-v1", env={"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    if checksum_ok:
        assert proc.returncode == 0, proc.stderr
        [record] = (results / "runs").glob("*.json")
        data = json.loads(record.read_text())
        assert data["weights_id"] == "hf:testorg/aimtest/aim_micro.pth@0123456789ab"  # the exact hub commit
        assert data["weights_sha256"] == digest
    else:
        assert proc.returncode == 2 and "checksum mismatch" in proc.stderr and "Traceback" not in proc.stderr


def test_hub_weights_missing_offline_say_how_to_get_them(tmp_path: Path) -> None:
    cards = tmp_path / "cards"
    aim_card(cards, "hf:testorg/aimtest/aim_micro.pth")
    proc = run_cli(
        "eval", "-b", "aim-micro-x", "-t", "digits", "--cards", str(cards), "--results", str(tmp_path / "r"),
        env={"HF_HUB_CACHE": str(tmp_path / "empty-hub"), "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode == 2
    assert "not in the Hugging Face cache" in proc.stderr and "--weights PATH" in proc.stderr


def test_local_override_of_a_hub_card_never_touches_the_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    path, source = apple_layout_file(tmp_path / "local_copy.pth")
    registry = aim_card(tmp_path / "cards", "hf:testorg/aimtest/aim_micro.pth", extra='sha256 = "00000000"')
    backbone = load_backbone("aim-micro-x", weights=str(path), registry=registry)
    assert backbone.weights.id == "file:local_copy.pth"  # the card's checksum guards its own file only
    assert torch.equal(backbone.model.trunk.blocks[0].attn.qkv.weight, source.trunk.blocks[0].attn.qkv.weight)


def test_bf16_materialises_file_weights_in_bf16_close_to_fp32(tmp_path: Path) -> None:
    path, _ = apple_layout_file(tmp_path / "aim_micro.pth")
    registry = aim_card(tmp_path / "cards", str(path))
    full = load_backbone("aim-micro-x", registry=registry)
    half = load_backbone("aim-micro-x", registry=registry, dtype="bf16")
    assert {p.dtype for p in half.model.parameters()} == {torch.bfloat16}
    assert half.weights == full.weights  # same file, same hash: the precision is recorded separately
    images = torch.randn(2, 3, 16, 16)
    a = full.forward_layers(images, [2])[2].patches
    b = half.forward_layers(images, [2])[2].patches.float()
    assert b.dtype == torch.float32 and torch.allclose(a, b, rtol=0.1, atol=0.1)
    assert not torch.equal(a, b)


def layer_norm_eps(model: torch.nn.Module) -> set[float]:
    return {m.eps for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}


def test_a_trunk_we_pretrained_is_built_with_the_layer_norm_eps_it_was_trained_with(tmp_path: Path) -> None:
    from aimbench.pretrain.checkpoint import export_trunk

    torch.manual_seed(4)
    trained = AIM(replace(PRESETS["aim-micro"], ln_eps=1e-5)).eval()  # l3m's pre-training eps
    for parameter in trained.parameters():  # norms away from (1, 0), so the eps is not the only thing that differs
        parameter.data.add_(0.1 * torch.randn_like(parameter))
    export_trunk({f"trunk.{k}": v for k, v in trained.state_dict().items()}, tmp_path / "trunk.safetensors",
                 {"preset": "aim-micro", LN_EPS_METADATA: "1e-05"})  # what 'aimbench pretrain' writes  # fmt: skip
    backbone = load_backbone("aim-micro-x", registry=aim_card(tmp_path / "cards", str(tmp_path / "trunk.safetensors")))
    assert layer_norm_eps(trained) == layer_norm_eps(backbone.model) == {1e-5}
    images = torch.randn(2, 3, 16, 16) * 1e-3  # faint images: a patch's variance near the eps, where 1e-5 and 1e-6 disagree
    with torch.no_grad():
        expected = trained.forward_layers(images, [0, 2])
        released_eps = build_aim("aim-micro")
        released_eps.load_state_dict(trained.state_dict())
        other = released_eps.forward_layers(images, [2])[0]
    got = backbone.forward_layers(images, [0, 2])
    assert all(torch.equal(a, b.patches) for a, b in zip(expected, got.values()))
    assert not torch.allclose(other, got[2].patches, atol=1e-4)  # the eps matters: the released 1e-6 would give other features
    released, _ = apple_layout_file(tmp_path / "official.pth")  # Apple's files carry no eps: the released model's 1e-6
    assert layer_norm_eps(load_backbone("aim-micro-x", registry=aim_card(tmp_path / "cards2", str(released))).model) == {1e-6}
