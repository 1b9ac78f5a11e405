"""Exporting per-layer tokens of a backbone for a set of images (``aimbench features``).

Users analyse features with it, and it is how our networks are checked against other
implementations: same images, same preprocessing, compare tensors. Output is one safetensors
file: ``block{i}.patches`` (images, N, D) and, where the family has them, ``block{i}.prefix``
(images, P, D), plus metadata saying which backbone, weights, preprocessing and images (in
order) produced them. Everything is held in memory and written atomically at the end.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from aimbench.adapters.base import Backbone, Blocks
from aimbench.atomic import atomic_write
from aimbench.data.source_base import open_image, read_text_lines
from aimbench.errors import UserError
from aimbench.safetensors_bytes import save_deterministic
from aimbench.special_files import require_regular
from aimbench.version import __version__

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def list_images(inputs: Sequence[Path]) -> list[Path]:
    """Images from folders (recursively, sorted), ``.txt`` lists (one path per line; ``#`` starts a comment) or files."""
    found: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.suffix.lower() == ".txt" and item.exists():
            lines = read_text_lines(item)  # a binary file under a .txt name is one error naming it
            found += [(item.parent / line) if not Path(line).is_absolute() else Path(line) for line in lines]
        elif item.exists():
            require_regular(item, "image or list")  # a FIFO is neither, and reading it would block
            found.append(item)
        else:
            raise UserError(f"input '{item}' does not exist")
    if not found:
        raise UserError(f"no images found in {', '.join(map(str, inputs))}")
    return found


def export_features(
    backbone: Backbone,
    images: Sequence[Path],
    layers: Blocks,
    output: Path,
    batch_size: int = 32,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, str]:
    """Write the tokens of ``layers`` for ``images`` to ``output``; return the file's metadata."""
    layers = backbone.resolve_blocks(layers)  # -1, "last", any order: the file names non-negative blocks
    transform = backbone.transform()
    patches: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    prefixes: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            batch = torch.stack([transform(open_image(path)) for path in chunk])
            for layer, out in backbone.forward_layers(batch, layers).items():
                patches[layer].append(out.patches.float().cpu())
                if out.prefix is not None:
                    prefixes[layer].append(out.prefix.float().cpu())
            if on_batch is not None:
                on_batch(len(chunk))
    tensors = {f"block{layer}.patches": torch.cat(patches[layer]).contiguous() for layer in layers}
    tensors |= {f"block{layer}.prefix": torch.cat(prefixes[layer]).contiguous() for layer in layers if prefixes[layer]}
    metadata = {
        "backbone": backbone.spec.name,
        "weights_id": backbone.weights.id,
        "weights_sha256": backbone.weights.sha256,
        "dtype": backbone.dtype,
        "layers": json.dumps(list(layers)),
        "preprocess": json.dumps(backbone.preprocess.as_dict()),
        "features": json.dumps(backbone.provenance.as_dict()),
        "images": json.dumps([str(path) for path in images]),
        "aimbench_version": __version__,
    }
    atomic_write(output, lambda handle: handle.write(save_deterministic(tensors, metadata)))
    return metadata
