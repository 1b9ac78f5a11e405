"""Equal tensors and metadata give equal safetensors bytes (and so equal sha256 in records)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from aimbench.safetensors_bytes import save_deterministic

TENSORS = {"b": torch.arange(4.0), "a": torch.ones(2, 3, dtype=torch.float16)}
METADATA = {f"key{i}": f"value {i} é" for i in range(12)}


def test_plain_save_orders_metadata_at_random_which_is_why_this_module_exists() -> None:
    assert len({save(TENSORS, metadata=dict(METADATA)) for _ in range(20)}) > 1


def test_the_bytes_depend_only_on_content_and_read_back_unchanged(tmp_path: Path) -> None:
    shuffled = dict(reversed(list(METADATA.items())))
    files = {save_deterministic(TENSORS, metadata) for metadata in [METADATA, shuffled] * 10}
    assert len(files) == 1
    [data] = files
    assert len(data) == len(save(TENSORS, metadata=METADATA))  # only the key order in the header changed
    path = tmp_path / "t.safetensors"
    path.write_bytes(data)
    with safe_open(str(path), "pt") as handle:
        assert handle.metadata() == METADATA
        assert torch.equal(handle.get_tensor("a"), TENSORS["a"]) and torch.equal(handle.get_tensor("b"), TENSORS["b"])
    assert hashlib.sha256(save_deterministic(TENSORS)).digest() == hashlib.sha256(save_deterministic(TENSORS)).digest()
