"""safetensors bytes that depend only on their content, so equal weights give equal checksums.

``safetensors.torch.save`` writes the ``__metadata__`` map in the iteration order of a Rust
HashMap, which is seeded randomly per map: the same tensors and metadata give different bytes,
and so a different sha256, from one save to the next. Records identify weights by that sha256
(an exported trunk, exported features), so the header is rewritten here with the metadata keys
sorted; tensor entries and data offsets are left as they were, and the header keeps its length.
"""

from __future__ import annotations

import json
import struct

import torch
from safetensors.torch import save


def save_deterministic(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    data = save(tensors, metadata=metadata)
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(text) > length:  # never: the same JSON in another key order cannot grow; padding is spaces
        raise AssertionError("safetensors header grew when its metadata was sorted")
    return data[:8] + text.ljust(length, b" ") + data[8 + length :]
