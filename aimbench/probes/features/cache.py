"""On-disk cache of pooled block features, so linear and kNN probes cost one backbone pass ever.

Layout: ``<root>/features/<backbone>/<key>/block<i>.safetensors``, one file per block holding
that block's pooled tokens (N, poolings, D) in fp16 (and ``tokens<i>.safetensors``, the patch-token
maps (N, tokens, D) that cached attentive probes read), plus ``key.json`` with what the key hashes.
The key is complete: the backbone card's content (architecture, preprocessing i.e. the
transform, poolings), the weights' SHA-256, the backbone dtype and device type, the dataset
source and revision, the split name and the exact examples (hash of indices and labels), and the
extraction format version. Blocks are separate files, so a later run that needs other blocks
extracts only those and reuses the rest.

Every feature goes through fp16 whether it was just extracted or read back, so a warm and a cold
cache give identical numbers. A block whose values would overflow fp16 is stored scaled by a power
of two (the exponent is in its metadata): that changes no mantissa bit, so every block of every
split has fp16's precision whatever its range, and a split's features never come in another
precision than the others' (val and test are scored in the same one). Files are written to a
hidden ``.part`` name and renamed, so an interrupted extraction never leaves a half file that a
later run would trust. Each block carries the checksum of its values in its metadata: a block
damaged after it was written (a stray write, a disk error) is never used; it is extracted again
with a one-line warning, and the counts the record keeps say how many were.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from aimbench.adapters.base import Backbone
from aimbench.atomic import atomic_write
from aimbench.checksum import CHECKSUM_KEY, content_sha256
from aimbench.data.images import LabelledImages
from aimbench.errors import UserError
from aimbench.paths import cache_dir
from aimbench.probes.features.extract import PooledFeatures, extract_pooled, extract_tokens
from aimbench.probes.ownership import Shard
from aimbench.probes.sharding import all_rows, barrier, from_main

FORMAT_VERSION = 2  # bump when extraction, pooling or the file layout changes (2: blocks carry a checksum)
FP16_MAX = float(torch.finfo(torch.float16).max)


def default_root() -> Path:
    return cache_dir()


def _array_sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@dataclass(frozen=True)
class SplitKey:
    """Which split of which dataset (source and content revision) a set of images is."""

    name: str
    source: str
    revision: str


@dataclass(frozen=True)
class Extraction:
    """How missing blocks are extracted and where the cache lives; never part of the key."""

    root: Path | None = None
    batch_size: int = 64
    workers: int = 0
    on_batch: Callable[[int], None] | None = None  # images extracted so far in this call, per batch
    on_cached: Callable[[], None] | None = None  # called instead when every block came from the cache
    shard: Shard = Shard()  # with several ranks: each extracts its rows, the main rank writes the files


def cache_key(backbone: Backbone, images: LabelledImages, split: SplitKey) -> dict:
    """Everything the pooled features of ``images`` depend on (see the module docstring)."""
    card = dataclasses.asdict(backbone.spec)
    card.pop("card_path")
    card.pop("official_probes")  # released heads do not change the features
    return {
        "format": FORMAT_VERSION,
        "backbone": card,
        "weights_sha256": backbone.weights.sha256,
        "dtype": backbone.dtype,
        "device_type": backbone.device.type,
        "dataset_source": split.source,
        "dataset_revision": split.revision,
        "split": split.name,
        "n": len(images),
        "indices_sha256": _array_sha(images.indices.astype(np.int64)),
        "labels_sha256": _array_sha(images.labels.astype(np.int64)),
    }


def _digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _to_storage(block: torch.Tensor) -> tuple[torch.Tensor, int]:
    """fp16 values and the exponent e with block ~ values * 2**e: 0 unless a finite value would
    overflow fp16 (never store an inf that was not one), then the smallest e that fits."""
    peak = block.abs().nan_to_num_(nan=0.0, posinf=0.0).max().item() if block.numel() else 0.0
    exponent = 0
    while peak * 2.0**-exponent > FP16_MAX:
        exponent += 1
    return (block if exponent == 0 else block.float() * 2.0**-exponent).to(torch.float16), exponent


def _restore(values: torch.Tensor, exponent: int) -> torch.Tensor:
    """A stored block as probes read it: fp16 as stored, or fp32 for a scaled one (exact: a power of two)."""
    return values if exponent == 0 else values.float() * 2.0**exponent


def _identity(block: int, key: dict) -> dict[str, str]:
    """What a block file says it is: its block, split and cache key, compared on every read, so a
    valid file of another block, split or key put in its place (renamed, copied) is never read as this one."""
    return {"block": str(block), "split": str(key["split"]), "key": _digest(key)}


def _read_block(path: Path, shape: tuple[int, ...], identity: dict[str, str]) -> tuple[torch.Tensor | None, bool]:
    """A cached block and False, or None and whether a file was there but damaged (then the block
    is extracted again): unreadable, of another shape, failing its checksum, or saying it is
    another block, split or key than ``identity``."""
    if not path.is_file():
        return None, False
    try:
        with safe_open(str(path), framework="pt") as handle:
            tensor, metadata = handle.get_tensor("features"), handle.metadata() or {}
        exponent = int(metadata.get("exponent", 0))
    except (SafetensorError, OSError, ValueError):
        return None, True
    if tuple(tensor.shape) != shape or metadata.get(CHECKSUM_KEY) != content_sha256(tensor):
        return None, True
    if any(metadata.get(name) != value for name, value in identity.items()):
        return None, True
    return _restore(tensor, exponent), False


def _write_bytes(handle: BinaryIO, data: bytes) -> None:
    handle.write(data)


def _extracted(
    images: LabelledImages, missing: list[int], extract: Callable[[LabelledImages, list[int]], dict[int, torch.Tensor]], shard: Shard
) -> dict[int, torch.Tensor]:
    """``missing`` blocks of every image: alone, one pass; with several ranks, each extracts its
    rows (whole forward chunks, so the values are the single-rank ones) and all ranks get all rows."""
    if shard.alone:
        return extract(images, missing)
    rows = shard.rows(len(images))
    mine = extract(images.subset(np.arange(rows.start, rows.stop)), missing)
    return {block: all_rows(mine[block], shard, len(images)) for block in missing}


def _cached_blocks(
    backbone: Backbone,
    images: LabelledImages,
    blocks: Sequence[int],
    key: dict,
    kind: str,
    shape: tuple[int, ...],
    extract: Callable[[LabelledImages, list[int]], dict[int, torch.Tensor]],
    how: Extraction,
) -> tuple[dict[int, torch.Tensor], dict[str, int]]:
    """Stored tensors of ``kind`` (``block`` pooled features, ``tokens`` patch-token maps) for
    every block, extracting the missing ones in one backbone pass and caching them. With several
    ranks the main rank's view of the cache decides what is missing, and only it writes."""
    folder = (how.root or default_root()) / "features" / backbone.spec.name / _digest(key)
    read = {block: _read_block(folder / f"{kind}{block}.safetensors", shape, _identity(block, key)) for block in blocks}
    stored = {block: tensor for block, (tensor, _) in read.items() if tensor is not None}
    missing = from_main([block for block in read if block not in stored], how.shard)
    damaged = from_main([block for block, (_, bad) in read.items() if bad], how.shard)
    if any(block not in stored and block not in missing for block in read):  # the main rank read a file this one cannot
        raise UserError(f"the feature cache under {folder} reads differently on this rank than on the main one: "
                        "every rank of a cell needs the same cache (a shared folder; set AIMBENCH_CACHE)")  # fmt: skip
    if damaged and how.shard.is_main:
        print(
            f"warning: cached {kind} {', '.join(map(str, damaged))} under {folder} failed their checksum, could not be "
            "read, or say they are another block, split or cache key (damaged or replaced after they were written); extracting them again",
            file=sys.stderr,
            flush=True,
        )
    if not missing and how.on_cached is not None:
        how.on_cached()
    if missing:
        extracted = _extracted(images, missing, extract, how.shard)
        storage = {block: _to_storage(extracted[block].contiguous()) for block in missing}
        stored.update({block: _restore(values, exponent) for block, (values, exponent) in storage.items()})
        if how.shard.is_main:
            _write_blocks(folder, key, kind, storage)
        barrier(how.shard)  # the next cell's ranks read what the main rank wrote
    counts = {"cached_blocks": len(blocks) - len(missing), "extracted_blocks": len(missing), "damaged_blocks": len(damaged)}
    return {block: stored[block] for block in read}, counts  # in block order, cached or extracted


def _write_blocks(folder: Path, key: dict, kind: str, storage: dict[int, tuple[torch.Tensor, int]]) -> None:
    """Write each block's stored values and exponent, with its identity and checksum; the key file once."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        key_file = folder / "key.json"
        if not key_file.exists():
            text = json.dumps(key, indent=1, sort_keys=True, default=str).encode()
            atomic_write(key_file, lambda handle: handle.write(text))
        for block, (values, exponent) in storage.items():
            metadata = {**_identity(block, key), "exponent": str(exponent), CHECKSUM_KEY: content_sha256(values)}
            data = save({"features": values}, metadata=metadata)
            atomic_write(folder / f"{kind}{block}.safetensors", partial(_write_bytes, data=data))
    except OSError as exc:
        raise UserError(f"cannot write the feature cache under {folder}: {exc.strerror or exc}; set AIMBENCH_CACHE") from None


def cached_pooled(
    backbone: Backbone,
    images: LabelledImages,
    blocks: Sequence[int],
    split: SplitKey,
    how: Extraction = Extraction(),
    block_norm: str = "raw",
) -> tuple[PooledFeatures, dict[str, int]]:
    """Pooled features of ``blocks`` (layout of ``feature_sources``; ``block_norm`` as
    :func:`~aimbench.probes.features.extract.pool_batch` takes it) and how many blocks were read
    from the cache, extracted, and extracted because their cached copy was damaged; missing blocks
    come from one backbone pass."""
    poolings, n, dim = len(backbone.spec.probe_tokens), len(images), backbone.dim

    def extract(part: LabelledImages, missing: list[int]) -> dict[int, torch.Tensor]:
        pooled = extract_pooled(backbone, part, missing, how.batch_size, how.workers, how.on_batch, block_norm).features
        per_block = pooled.view(len(part), len(missing), poolings, dim)
        return {block: per_block[:, i] for i, block in enumerate(missing)}

    key = cache_key(backbone, images, split)
    if block_norm != "raw":  # raw features keep the key they always had, so existing caches stay valid
        key["block_norm"] = block_norm
    stored, stats = _cached_blocks(backbone, images, blocks, key, "block", (n, poolings, dim), extract, how)
    features = torch.stack([stored[block].float() for block in blocks], dim=1).reshape(n, len(blocks) * poolings, dim)
    return PooledFeatures(features, torch.as_tensor(images.labels, dtype=torch.int64)), stats


def cached_tokens(
    backbone: Backbone, images: LabelledImages, blocks: Sequence[int], split: SplitKey, how: Extraction = Extraction()
) -> tuple[dict[int, torch.Tensor], dict[str, int]]:
    """Patch-token maps (N, tokens, D) of ``blocks`` (eval crop), stored fp16: what cached
    attentive probes train on for every epoch without running the backbone again."""
    n, tokens, dim = len(images), backbone.patch_tokens(), backbone.dim

    def extract(part: LabelledImages, missing: list[int]) -> dict[int, torch.Tensor]:
        return extract_tokens(backbone, part, missing, how.batch_size, how.workers, how.on_batch)

    return _cached_blocks(backbone, images, blocks, cache_key(backbone, images, split), "tokens", (n, tokens, dim), extract, how)
