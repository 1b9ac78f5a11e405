"""The on-disk feature cache: warm equals cold, per-block reuse, a complete key, damage recovery."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import count_forwards
from safetensors.torch import save

from aimbench.adapters import build_backbone, load_backbone
from aimbench.adapters.base import Backbone
from aimbench.cards.registry import Registry
from aimbench.checksum import CHECKSUM_KEY, content_sha256
from aimbench.data.images import LabelledImages
from aimbench.probes.features.cache import Extraction, SplitKey, _read_block, _restore, _to_storage, cache_key, cached_pooled, cached_tokens
from aimbench.probes.features.extract import extract_pooled, extract_tokens


@pytest.fixture
def backbone(tiny_cards: Path) -> Backbone:
    return load_backbone("micro-cls", registry=Registry.load([tiny_cards]))


def _images(n: int = 7, seed: int = 0) -> LabelledImages:
    rng = np.random.default_rng(seed)
    return LabelledImages.from_arrays(rng.integers(0, 256, (n, 16, 16), dtype=np.uint8), rng.integers(0, 3, n))


def _run(backbone: Backbone, images: LabelledImages, blocks: list[int], root: Path, split: str = "train"):  # type: ignore[no-untyped-def]
    return cached_pooled(backbone, images, blocks, SplitKey(split, "builtin:test", "rev1"), Extraction(root, batch_size=3))


def _forbid_forward(backbone: Backbone) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("the backbone ran although every block was cached")

    backbone.forward_layers = refuse  # type: ignore[method-assign]


def test_cold_and_warm_cache_give_identical_fp16_features(backbone: Backbone, tmp_path: Path) -> None:
    images = _images()
    cold, stats = _run(backbone, images, [0, 2], tmp_path)
    assert stats == {"cached_blocks": 0, "extracted_blocks": 2, "damaged_blocks": 0}
    direct = extract_pooled(backbone, images, [0, 2])
    assert torch.equal(cold.features, direct.features.half().float())  # stored precision, even when cold
    _forbid_forward(backbone)
    warm, stats = _run(backbone, images, [0, 2], tmp_path)
    assert stats == {"cached_blocks": 2, "extracted_blocks": 0, "damaged_blocks": 0}
    assert torch.equal(warm.features, cold.features) and torch.equal(warm.labels, cold.labels)
    files = sorted(p.name for p in (tmp_path / "features").rglob("*") if p.is_file())
    assert files == ["block0.safetensors", "block2.safetensors", "key.json"]


def test_only_missing_blocks_are_extracted(backbone: Backbone, tmp_path: Path) -> None:
    images = _images()
    first, _ = _run(backbone, images, [0, 2], tmp_path)
    calls = count_forwards(backbone)
    second, stats = _run(backbone, images, [1, 2], tmp_path)
    assert stats == {"cached_blocks": 1, "extracted_blocks": 1, "damaged_blocks": 0}
    assert {tuple(layers) for _, layers in calls} == {(1,)}  # one pass, for the missing block only
    width = len(backbone.spec.probe_tokens)
    assert torch.equal(second.features[:, width:], first.features[:, width:])  # block 2 reused


def test_key_changes_with_every_input(backbone: Backbone, tiny_cards: Path) -> None:
    images = _images()
    base = cache_key(backbone, images, SplitKey("train", "builtin:test", "rev1"))
    other_weights = build_backbone(backbone.spec, dtype="fp32")
    other_weights.weights = replace(other_weights.weights, sha256="0" * 64)
    changed = [
        cache_key(backbone, images, SplitKey("val", "builtin:test", "rev1")),  # split
        cache_key(backbone, images, SplitKey("train", "builtin:test", "rev2")),  # dataset revision
        cache_key(backbone, images, SplitKey("train", "idx:/data", "rev1")),  # dataset source
        cache_key(backbone, images.subset(np.arange(6)), SplitKey("train", "builtin:test", "rev1")),  # examples
        cache_key(backbone, images.subset(np.arange(7)[::-1]), SplitKey("train", "builtin:test", "rev1")),  # order
        cache_key(other_weights, images, SplitKey("train", "builtin:test", "rev1")),  # weights
        cache_key(build_backbone(backbone.spec, dtype="bf16"), images, SplitKey("train", "builtin:test", "rev1")),  # dtype
    ]
    for pre in ({"resize_size": 20}, {"interpolation": "bicubic"}, {"mean": (0.4, 0.5, 0.5)}):  # the transform
        spec = replace(backbone.spec, preprocess=replace(backbone.spec.preprocess, **pre))
        changed.append(cache_key(build_backbone(spec), images, SplitKey("train", "builtin:test", "rev1")))
    changed.append(
        cache_key(build_backbone(replace(backbone.spec, probe_tokens=("patch_mean",))), images, SplitKey("train", "builtin:test", "rev1"))
    )
    relabelled = LabelledImages(images.get_image, (images.labels + 1) % 3, images.indices)
    changed.append(cache_key(backbone, relabelled, SplitKey("train", "builtin:test", "rev1")))  # labels
    assert all(key != base for key in changed)
    assert len({str(sorted(k.items())) for k in changed}) == len(changed)
    assert cache_key(backbone, images, SplitKey("train", "builtin:test", "rev1")) == base


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"truncated",  # not a safetensors file any more
        lambda data: data[:-4096] + np.random.default_rng(0).bytes(4096),  # random bytes over the values: parses fine
        lambda data: data[:-64] + bytes(64),  # a zeroed region: parses fine
        lambda data: data[:-1] + bytes([data[-1] ^ 1]),  # one flipped bit
    ],
    ids=["truncated", "random-bytes", "zeroed", "bit-flip"],
)
def test_damaged_block_is_never_used_but_extracted_again_with_a_warning(
    backbone: Backbone, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: Callable[[bytes], bytes]
) -> None:
    images = _images(n=300)
    first, _ = _run(backbone, images, [1, 2], tmp_path)
    [block] = tmp_path.rglob("block1.safetensors")
    block.write_bytes(damage(block.read_bytes()))
    capsys.readouterr()
    again, stats = _run(backbone, images, [1, 2], tmp_path)
    assert stats == {"cached_blocks": 1, "extracted_blocks": 1, "damaged_blocks": 1}
    assert torch.equal(again.features, first.features)
    [warning] = capsys.readouterr().err.splitlines()
    assert warning.startswith("warning: cached block 1 under ") and "failed their checksum" in warning
    assert _run(backbone, images, [1, 2], tmp_path)[1]["damaged_blocks"] == 0  # the re-extracted block is whole again
    assert not list(tmp_path.rglob(".*.part"))


def test_token_maps_are_cached_beside_pooled_features(backbone: Backbone, tmp_path: Path) -> None:
    images = _images()
    maps, stats = cached_tokens(backbone, images, [0, 2], SplitKey("train", "builtin:test", "rev1"), Extraction(tmp_path))
    assert stats == {"cached_blocks": 0, "extracted_blocks": 2, "damaged_blocks": 0}
    assert maps[2].shape == (7, 16, 32) and maps[2].dtype == torch.float16  # 16 px / patch 4 -> 16 tokens
    direct = extract_tokens(backbone, images, [2])[2]
    assert torch.equal(maps[2], direct.half())
    _run(backbone, images, [0], tmp_path)  # pooled features of the same split share the key folder
    _forbid_forward(backbone)
    again, stats = cached_tokens(backbone, images, [0, 2], SplitKey("train", "builtin:test", "rev1"), Extraction(tmp_path))
    assert stats == {"cached_blocks": 2, "extracted_blocks": 0, "damaged_blocks": 0} and torch.equal(again[0], maps[0])
    names = sorted(p.name for p in (tmp_path / "features").rglob("*.safetensors"))
    assert names == ["block0.safetensors", "tokens0.safetensors", "tokens2.safetensors"]


def test_every_split_is_stored_in_fp16_precision_whatever_its_range(tmp_path: Path) -> None:
    """A block too large for fp16 is stored scaled by a power of two, never in another precision:
    a val split that fits and a test split that does not are rounded alike."""
    values = torch.randn(6, 2, 8, generator=torch.Generator().manual_seed(0))
    small, exponent = _to_storage(values)
    large, large_exponent = _to_storage(values * 2.0**20)  # up to ~4e6: beyond fp16's 65504
    assert (small.dtype, large.dtype, exponent) == (torch.float16, torch.float16, 0) and large_exponent > 0
    assert torch.equal(_restore(large, large_exponent), _restore(small, exponent).float() * 2.0**20)
    assert torch.isfinite(_restore(large, large_exponent)).all()
    # a block without a checksum (written by hand or by another tool) is never trusted
    foreign = tmp_path / "block0.safetensors"
    foreign.write_bytes(save({"features": small}, metadata={"block": "0", "exponent": "0"}))
    identity = {"block": "0", "split": "val", "key": "k"}
    assert _read_block(foreign, tuple(values.shape), identity) == (None, True)
    # a valid block says which block, split and key it is: any other is never read in its place
    checksum = content_sha256(small)
    for says in ({**identity, "block": "1"}, {**identity, "split": "test"}, {**identity, "key": "other"}):
        foreign.write_bytes(save({"features": small}, metadata={**says, "exponent": "0", CHECKSUM_KEY: checksum}))
        assert _read_block(foreign, tuple(values.shape), identity) == (None, True)
    foreign.write_bytes(save({"features": small}, metadata={**identity, "exponent": "0", CHECKSUM_KEY: checksum}))
    assert torch.equal(_read_block(foreign, tuple(values.shape), identity)[0], small)


def test_progress_says_cached_when_no_block_is_extracted(backbone: Backbone, tmp_path: Path) -> None:
    images, events = _images(), []
    how = Extraction(tmp_path, batch_size=3, on_batch=lambda n: events.append(("batch", n)), on_cached=lambda: events.append(("cached", 0)))
    split = SplitKey("train", "builtin:test", "rev1")
    cached_pooled(backbone, images, [0, 2], split, how)
    assert events == [("batch", 3), ("batch", 3), ("batch", 1)]  # extracted: the bar advances per batch
    events.clear()
    cached_pooled(backbone, images, [0, 2], split, how)
    assert events == [("cached", 0)]  # all from the cache: said once, no batches
    events.clear()
    cached_pooled(backbone, images, [1, 2], split, how)
    assert [kind for kind, _ in events] == ["batch", "batch", "batch"]  # one block missing: extracted, not "cached"


def test_final_norm_features_pool_normed_tokens_and_are_cached_apart_from_raw_ones(backbone: Backbone, tmp_path: Path) -> None:
    """DINOv2's block_norm "final": every token of a block through the network's final norm, then
    pooled; raw features keep the key they always had, so an existing cache stays valid."""
    images = _images()
    split, how = SplitKey("train", "builtin:test", "rev1"), Extraction(tmp_path, batch_size=3)
    raw, _ = cached_pooled(backbone, images, [1], split, how)
    normed, stats = cached_pooled(backbone, images, [1], split, how, block_norm="final")
    assert stats["extracted_blocks"] == 1  # not the raw block from the cache
    batch = torch.stack([backbone.transform()(images.image(i)) for i in range(len(images))])
    with torch.no_grad():
        out = backbone.forward_layers(batch, [1])[1]
        norm = backbone.model.norm  # timm's norm after the last block
        expected = torch.stack([norm(out.patches).mean(dim=1), norm(out.prefix)[:, 0]], dim=1)
    assert torch.allclose(normed.features, expected.half().float(), atol=1e-6)
    assert not torch.allclose(normed.features, raw.features)
    folders = sorted(p.parent.name for p in (tmp_path / "features").rglob("key.json"))
    assert len(folders) == 2 and cache_key(backbone, images, split).get("block_norm") is None


def test_a_network_without_a_final_norm_reads_raw_blocks_from_the_raw_cache(backbone: Backbone, tmp_path: Path) -> None:
    """As timm's forward_intermediates(norm=True) reads a model whose norm is Identity (it pools
    first and normalises after, fc_norm): block_norm "final" is then the raw blocks, and the raw
    features already cached serve it."""
    from torch import nn

    from aimbench.probes.features.extract import read_block_norm

    assert read_block_norm(backbone, "final") == "final" and read_block_norm(backbone, "raw") == "raw"
    backbone.model.norm = nn.Identity()
    assert backbone.final_norm() is None and read_block_norm(backbone, "final") == "raw"
    images, split, how = _images(), SplitKey("train", "builtin:test", "rev1"), Extraction(tmp_path, batch_size=3)
    raw, _ = cached_pooled(backbone, images, [1], split, how)
    again, stats = cached_pooled(backbone, images, [1], split, how, block_norm=read_block_norm(backbone, "final"))
    assert stats["extracted_blocks"] == 0 and torch.equal(again.features, raw.features)
