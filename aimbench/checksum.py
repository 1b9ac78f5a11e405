"""Content checksums of what aimbench writes and later reads back (cached features, training
states, checkpoints, exported trunks).

A file can be damaged after it was written completely: a disk or copy error, a stray write, a bit
flip. The formats parse fine (a random overwrite of the data region of a safetensors file leaves
its header intact), so without a checksum damaged features are silently reused and change a score.
Each such file therefore carries the SHA-256 of its content, written with it and compared when it
is read; the digest is over the tensors and values themselves (names, dtypes, shapes, bytes), not
over the file's bytes, so it can live inside the file (safetensors metadata, a key of a saved dict)
and does not depend on how a serializer lays the file out.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping
from typing import Any

CHECKSUM_KEY = "aimbench_sha256"  # the key that holds the digest: in safetensors metadata or a saved dict


def _update(digest: Any, value: Any) -> None:
    """Feed ``value`` into ``digest`` with its type and structure, so different shapes of data never collide."""
    torch = sys.modules.get("torch")  # a tensor exists only once torch is imported: reports hash records without loading it
    if torch is not None and isinstance(value, torch.Tensor):
        flat = value.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"T{value.dtype}{tuple(value.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy() if flat.numel() else b"")
    elif isinstance(value, Mapping):
        digest.update(f"D{len(value)};".encode())
        for key in sorted(value, key=str):
            digest.update(f"K{key!r};".encode())
            _update(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)};".encode())
        for item in value:
            _update(digest, item)
    else:
        digest.update(f"V{value!r};".encode())


def content_sha256(value: Any) -> str:
    """SHA-256 of nested dicts, lists, tensors and plain values (what ``torch.save`` and safetensors hold)."""
    digest = hashlib.sha256()
    _update(digest, value)
    return digest.hexdigest()


def seal(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` with its checksum under :data:`CHECKSUM_KEY`, ready for ``torch.save``."""
    return {**state, CHECKSUM_KEY: content_sha256(dict(state))}


def unseal(state: Mapping[str, Any]) -> dict[str, Any] | None:
    """The content of a sealed ``state`` when its checksum matches; None when it does not or is missing."""
    content = {key: value for key, value in state.items() if key != CHECKSUM_KEY}
    return content if state.get(CHECKSUM_KEY) == content_sha256(content) else None
