"""What planning knows of a cell from the cards alone: images per split as the run will see them,
patch tokens per image, and the :class:`~aimbench.probes.PlanShape` a probe kind's cost hooks read.
The cost plan (``cost``) and the disk check (``preflight``) both start here, so a sweep is sized
the same way for time, memory and disk, before its data or weights exist."""

from __future__ import annotations

import math
import re

from aimbench.cards.backbone_card import BackboneSpec
from aimbench.cards.registry import Registry
from aimbench.cards.task_card import SPLITS, TaskSpec
from aimbench.dtypes import BYTES
from aimbench.launch.cells import Cell
from aimbench.models.presets import PRESETS
from aimbench.probes import PlanShape

_PATCH = re.compile(r"patch(\d+)|ViT-[A-Za-z]+-(\d+)")  # timm's vit_base_patch16_224, open_clip's ViT-L-14


def patch_tokens(spec: BackboneSpec) -> int:
    """Patch tokens per image where the card says the patch size (model_args, an AIM preset, or the arch name), else 0."""
    size = spec.model_args.get("patch_size")
    if not isinstance(size, int) and spec.adapter == "aim" and spec.arch in PRESETS:
        size = PRESETS[spec.arch].patch_size
    if not isinstance(size, int):
        match = _PATCH.search(spec.arch)
        size = int(match.group(1) or match.group(2)) if match else 0
    return (spec.preprocess.image_size // size) ** 2 if size > 0 else 0


def split_sizes(task: TaskSpec, limit: int | None, val_fraction: float | None) -> dict[str, int]:
    """Images per split as a run would see them, from the card's expected sizes: a val carved by the
    protocol's fraction leaves train (rounded up, as the stratified split rounds it), then ``--limit`` caps each."""
    sizes = dict(task.expected_sizes)
    if "val" not in sizes:
        val = math.ceil(sizes["train"] * (val_fraction or 0.0))
        sizes = {"train": sizes["train"] - val, "val": val, "test": sizes["test"]}
    return {name: sizes[name] if limit is None else min(sizes[name], limit) for name in SPLITS}


def plan_shape(cell: Cell, registry: Registry, patches: int, chunk: int = 64) -> PlanShape:
    """The cell's shape for its kind's hooks; ``patches``: patch tokens per image (cost and disk read
    them their own way); ``chunk``: images per backbone forward (``--batch-size``)."""
    spec, task = registry.backbone(cell.backbone), registry.task(cell.task)
    return PlanShape(
        layer_sets=cell.planned_sets,
        dim=spec.dim,
        attention_heads=spec.heads,
        patch_tokens=patches,
        probe_tokens=tuple(spec.probe_tokens),
        classes=task.num_classes,
        sizes=split_sizes(task, cell.limit, cell.val_fraction),
        chunk=chunk,
        value_bytes=BYTES[cell.dtype],
        prefix_tokens=len(spec.prefix_layout),
    )
