"""Weights: deterministic random init, strict and safe file loading, card checksums."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import timm
import torch
from conftest import micro_card_header, write_card
from safetensors.torch import save_file

from aimbench.adapters import build_backbone, load_backbone
from aimbench.adapters.timm_family import RANDOM_INIT_SEED
from aimbench.adapters.weights import load_state_dict_file, load_strict, state_dict_sha256, verify_checksum
from aimbench.cards.registry import Registry
from aimbench.errors import UserError

MICRO_ARGS = dict(img_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=2)
SUFFIXES = [".safetensors", ".pth"]


@pytest.fixture
def registry(tiny_cards: Path) -> Registry:
    return Registry.load([tiny_cards])


def _source_model(seed: int = 1, **extra: object) -> torch.nn.Module:
    """A micro-cls-shaped model with weights that differ from the random-init seed."""
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **{"num_classes": 0, **MICRO_ARGS, **extra}).eval()


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    state = {k: v.detach().clone().contiguous() for k, v in state.items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _images(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


# --- random init ----------------------------------------------------------------------------


def test_random_init_is_deterministic(registry: Registry) -> None:
    a = load_backbone("micro-cls", registry=registry)
    b = load_backbone("micro-cls", registry=registry)
    assert a.weights.id == f"random-init:seed{RANDOM_INIT_SEED}"
    assert a.weights.sha256 == b.weights.sha256
    assert len(a.weights.sha256) == 64
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.weights.sha256 == state_dict_sha256(sa)
    # the hash is of the numbers: another variant has another hash
    other = load_backbone("micro-patches", registry=registry)
    assert other.weights.sha256 != a.weights.sha256


def test_random_init_leaves_the_global_rng_alone(registry: Registry) -> None:
    torch.manual_seed(1234)
    before = torch.get_rng_state().clone()
    load_backbone("micro-cls", registry=registry)
    assert torch.equal(torch.get_rng_state(), before)
    drawn = torch.rand(5)
    torch.manual_seed(1234)
    assert torch.equal(torch.rand(5), drawn)


def test_random_init_does_not_depend_on_the_global_seed(registry: Registry) -> None:
    torch.manual_seed(1)
    a = load_backbone("micro-cls", registry=registry)
    torch.manual_seed(2)
    b = load_backbone("micro-cls", registry=registry)
    assert a.weights.sha256 == b.weights.sha256


def test_state_dict_sha256_sees_values_names_and_dtypes() -> None:
    state = {"a": torch.arange(4, dtype=torch.float32), "b": torch.ones(2, 2)}
    base = state_dict_sha256(state)
    assert state_dict_sha256(dict(reversed(list(state.items())))) == base  # key order is irrelevant
    assert state_dict_sha256({**state, "a": torch.tensor([0.0, 1.0, 2.0, 3.5])}) != base
    assert state_dict_sha256({"c": state["a"], "b": state["b"]}) != base
    assert state_dict_sha256({**state, "a": state["a"].double()}) != base
    assert state_dict_sha256({**state, "b": torch.ones(4)}) != base


# --- weight files ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_weights_file_loads_strictly_and_reproduces_the_source(registry: Registry, tmp_path: Path, suffix: str) -> None:
    source = _source_model()
    path = _save(source.state_dict(), tmp_path / f"micro{suffix}")

    backbone = load_backbone("micro-cls", weights=str(path), registry=registry)
    assert backbone.weights.id == f"file:{path.name}"
    assert backbone.weights.sha256 == _sha256(path)

    loaded = backbone.model.state_dict()
    expected = source.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)

    images = _images()
    out = backbone.forward_layers(images, [0, 2])
    with torch.no_grad():
        ref = source.forward_intermediates(
            images, indices=[0, 2], norm=False, output_fmt="NLC", intermediates_only=True, return_prefix_tokens=True
        )
    for tokens, (patches, prefix) in zip(out.values(), ref):
        assert torch.allclose(tokens.patches, patches, atol=1e-6)
        assert torch.allclose(tokens.prefix, prefix, atol=1e-6)

    # the file really replaced the random init
    random = load_backbone("micro-cls", registry=registry)
    assert not torch.allclose(random.forward_layers(images, [2])[2].patches, out[2].patches)
    assert random.weights.sha256 != backbone.weights.sha256


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_training_checkpoint_wrappers_are_unwrapped(registry: Registry, tmp_path: Path, wrapper: str) -> None:
    source = _source_model(seed=3)
    path = tmp_path / "ckpt.pth"
    torch.save({wrapper: source.state_dict(), "epoch": 7}, path)
    backbone = load_backbone("micro-cls", weights=str(path), registry=registry)
    assert torch.equal(backbone.model.pos_embed, source.pos_embed)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_classifier_head_in_the_file_is_dropped(registry: Registry, tmp_path: Path, suffix: str) -> None:
    source = _source_model(seed=2, num_classes=5)
    state = source.state_dict()
    assert {"head.weight", "head.bias"} <= set(state)
    path = _save(state, tmp_path / f"with_head{suffix}")

    backbone = load_backbone("micro-cls", weights=str(path), registry=registry)
    loaded = backbone.model.state_dict()
    assert not any(k.startswith("head.") for k in loaded)
    assert isinstance(backbone.model.head, torch.nn.Identity)
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)


def _corrupt(state: dict[str, torch.Tensor], how: str) -> tuple[dict[str, torch.Tensor], str, str]:
    state = dict(state)
    if how == "missing":
        del state["blocks.1.attn.qkv.weight"]
        return state, "blocks.1.attn.qkv.weight", "1 missing"
    if how == "unexpected":
        state["blocks.7.mlp.fc9.weight"] = torch.zeros(3)
        return state, "blocks.7.mlp.fc9.weight", "1 unexpected"
    state["blocks.0.norm1.weight"] = torch.zeros(5)  # (pos_embed would be resampled by timm's filter)
    return state, "blocks.0.norm1.weight (5,) vs model (32,)", "1 shape mismatch"


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("how", ["missing", "unexpected", "shape"])
def test_weights_that_do_not_fit_name_the_key(registry: Registry, tmp_path: Path, suffix: str, how: str) -> None:
    state, key, label = _corrupt(_source_model().state_dict(), how)
    path = _save(state, tmp_path / f"bad{suffix}")
    with pytest.raises(UserError) as info:
        load_backbone("micro-cls", weights=str(path), registry=registry)
    message = str(info.value)
    assert key in message
    assert label in message
    assert str(path) in message


def test_load_strict_lists_many_problems_briefly() -> None:
    model = _source_model()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("blocks.")}
    with pytest.raises(UserError) as info:
        load_strict(model, state, "somewhere")
    message = str(info.value)
    assert message.startswith("weights 'somewhere' do not fit the model:")
    n_block_keys = sum(k.startswith("blocks.") for k in model.state_dict())
    assert f"{n_block_keys} missing" in message
    assert f"(+{n_block_keys - 5} more)" in message


def test_missing_weights_file_is_a_user_error(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_backbone("micro-cls", weights=str(tmp_path / "nope.safetensors"), registry=registry)


def _truncations(path: Path) -> dict[str, bytes]:
    data = path.read_bytes()
    return {"empty": b"", "first-3-bytes": data[:3], "half": data[: len(data) // 2]}


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("cut", ["empty", "first-3-bytes", "half"])
def test_truncated_file_is_a_user_error(registry: Registry, tmp_path: Path, suffix: str, cut: str) -> None:
    good = _save(_source_model().state_dict(), tmp_path / f"good{suffix}")
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(_truncations(good)[cut])
    with pytest.raises(UserError, match="cannot load weights file"):
        load_backbone("micro-cls", weights=str(bad), registry=registry)


def test_garbage_safetensors_file_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"this is not a weights file " * 8)
    with pytest.raises(UserError, match="cannot load weights file"):
        load_state_dict_file(path)


@pytest.mark.parametrize("damage", ["last-byte-dropped", "text-garbage"])
def test_corrupt_pth_file_is_a_user_error(tmp_path: Path, damage: str) -> None:
    # torch's zip reader fails with OSError (not RuntimeError) for this file size once its tail
    # is cut; which sizes do so depends on the archive layout, so the size is pinned here
    good = _save({"a": torch.zeros(1000)}, tmp_path / "good.pth")
    bad = tmp_path / "bad.pth"
    data = good.read_bytes()
    bad.write_bytes(data[:-1] if damage == "last-byte-dropped" else b"hello world this is not a file" * 5)
    with pytest.raises(UserError, match="cannot load weights file"):
        load_state_dict_file(bad)


RAN: list[str] = []


def _record(what: str) -> str:
    RAN.append(what)
    return what


class Payload:
    """Unpickling this would call ``_record`` - weights-only loading must refuse it."""

    def __reduce__(self) -> tuple:
        return (_record, ("pickled code ran",))


class PlainObject:
    pass


@pytest.mark.parametrize("payload", [Payload, PlainObject])
def test_pickled_python_objects_are_refused(registry: Registry, tmp_path: Path, payload: type) -> None:
    RAN.clear()
    path = tmp_path / "evil.pth"
    state = dict(_source_model().state_dict())
    state["x"] = payload()
    torch.save(state, path)
    with pytest.raises(UserError, match="cannot load weights file"):
        load_backbone("micro-cls", weights=str(path), registry=registry)
    assert RAN == []


def test_file_without_a_tensor_dict_is_refused(tmp_path: Path) -> None:
    for i, content in enumerate(([1, 2, 3], {"a": 1}, {"a": torch.zeros(1), "b": "text"})):
        path = tmp_path / f"odd{i}.pth"
        torch.save(content, path)
        with pytest.raises(UserError, match="does not hold a state dict of tensors"):
            load_state_dict_file(path)


# --- card checksums -------------------------------------------------------------------------

CHECKSUM_CARD = """
[variants.micro-file]
arch = "vit_tiny_patch16_224"
weights = {weights}
{sha_line}
model_args = {{ img_size = 16, patch_size = 4, embed_dim = 32, depth = 3, num_heads = 2 }}
depth = 3
dim = 32
heads = 2
cls_token = true
"""


def _file_card(tmp_path: Path, weights: Path, sha256: str | None) -> Registry:
    sha_line = f"sha256 = {json.dumps(sha256)}" if sha256 is not None else ""
    root = tmp_path / "cards"
    variant = CHECKSUM_CARD.format(weights=json.dumps(str(weights)), sha_line=sha_line)
    write_card(root, "backbones", "filefam", micro_card_header("filefam") + variant)
    return Registry.load([root])


def _wrong_prefix(digest: str) -> str:
    return "00000000" if not digest.startswith("00000000") else "ffffffff"


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_card_checksum_mismatch_is_refused(tmp_path: Path, suffix: str) -> None:
    path = _save(_source_model().state_dict(), tmp_path / f"published{suffix}")
    registry = _file_card(tmp_path, path, _wrong_prefix(_sha256(path)))
    with pytest.raises(UserError, match="checksum mismatch") as info:
        load_backbone("micro-file", registry=registry)
    assert str(path) in str(info.value)
    # passing the card's own path explicitly is still checked
    with pytest.raises(UserError, match="checksum"):
        load_backbone("micro-file", weights=str(path), registry=registry)


@pytest.mark.parametrize("form", ["prefix", "upper-prefix", "full"])
def test_card_checksum_match_loads(tmp_path: Path, form: str) -> None:
    path = _save(_source_model().state_dict(), tmp_path / "published.safetensors")
    digest = _sha256(path)
    expected = {"prefix": digest[:8], "upper-prefix": digest[:8].upper(), "full": digest}[form]
    registry = _file_card(tmp_path, path, expected)
    backbone = load_backbone("micro-file", registry=registry)
    assert backbone.weights.sha256 == digest
    assert backbone.weights.id == "file:published.safetensors"


def test_checksum_is_verified_before_the_file_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "published.safetensors"
    path.write_bytes(b"not weights at all")
    registry = _file_card(tmp_path, path, _wrong_prefix(_sha256(path)))
    with pytest.raises(UserError, match="checksum mismatch"):
        load_backbone("micro-file", registry=registry)


def test_card_without_checksum_loads_its_file(tmp_path: Path) -> None:
    path = _save(_source_model().state_dict(), tmp_path / "plain.pth")
    backbone = load_backbone("micro-file", registry=_file_card(tmp_path, path, None))
    assert backbone.weights.sha256 == _sha256(path)


def test_verify_checksum_unit(tmp_path: Path) -> None:
    digest = "ab" * 32
    verify_checksum(tmp_path, digest, None)
    verify_checksum(tmp_path, digest, "")
    verify_checksum(tmp_path, digest, "abab")
    verify_checksum(tmp_path, digest, "ABAB")
    with pytest.raises(UserError, match="checksum mismatch"):
        verify_checksum(tmp_path, digest, "abac")


def test_relative_card_path_is_relative_to_the_card_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "cards" / "backbones" / "w"
    folder.mkdir(parents=True)
    weights = _save(_source_model().state_dict(), folder / "micro.safetensors")
    registry = _file_card(tmp_path, Path("w/micro.safetensors"), _sha256(weights)[:8])
    monkeypatch.chdir(tmp_path)  # a working-directory lookup would miss the file
    backbone = load_backbone("micro-file", registry=registry)
    assert backbone.weights.sha256 == _sha256(weights)


def test_loading_a_weights_file_leaves_the_global_rng_alone(registry: Registry, tmp_path: Path) -> None:
    path = _save(_source_model().state_dict(), tmp_path / "w.safetensors")
    torch.manual_seed(123)
    before = torch.get_rng_state()
    load_backbone("micro-cls", weights=str(path), registry=registry)
    assert torch.equal(torch.get_rng_state(), before)


def test_timm_filter_resamples_position_embeddings_only_where_the_card_allows_it(registry: Registry, tmp_path: Path) -> None:
    """A file saved at 32 px (8x8 grid) loads into the card's 16 px model (4x4 grid) only where the
    card lists pos_embed in resample_keys, and the weights' id then says it was resampled."""
    source = _source_model(img_size=32)
    path = _save(source.state_dict(), tmp_path / "at32.safetensors")
    assert source.state_dict()["pos_embed"].shape[1] == 1 + 64
    with pytest.raises(
        UserError, match=r"1 tensor\(s\) would be resampled \(pos_embed \(1, 65, 32\) -> \(1, 17, 32\)\); .* resample_keys$"
    ):
        load_backbone("micro-cls", weights=str(path), registry=registry)
    spec = dataclasses.replace(registry.backbone("micro-cls"), resample_keys=("pos_embed",))
    backbone = build_backbone(spec, weights=str(path))
    assert backbone.model.pos_embed.shape[1] == 1 + 16 and backbone.weights.id == f"file:{path.name} (resampled: pos_embed)"
    assert torch.equal(backbone.model.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)


def test_a_patch_kernel_that_does_not_fit_the_card_fails_the_load_naming_it(registry: Registry, tmp_path: Path) -> None:
    """timm's filter would resample an 8x8 patch kernel to the card's 4x4: another network, so refused."""
    path = _save(_source_model(img_size=32, patch_size=8).state_dict(), tmp_path / "patch8.safetensors")  # 1 + 16 positions, as the card's
    spec = dataclasses.replace(registry.backbone("micro-cls"), resample_keys=("pos_embed",))
    with pytest.raises(UserError, match=r"would be resampled \(patch_embed\.proj\.weight \(32, 3, 8, 8\) -> \(32, 3, 4, 4\)\)"):
        build_backbone(spec, weights=str(path))


def test_a_one_dimensional_position_embedding_is_one_line_naming_the_file(registry: Registry, tmp_path: Path) -> None:
    state = _source_model().state_dict()
    path = _save({**state, "pos_embed": state["pos_embed"].flatten()}, tmp_path / "flat.safetensors")
    with pytest.raises(UserError) as info:
        load_backbone("micro-cls", weights=str(path), registry=registry)
    message = str(info.value)
    assert str(path) in message and "\n" not in message and ("pos_embed" in message or "not in a layout" in message)
