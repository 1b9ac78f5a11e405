"""What a plan costs before it runs: images, backbone forwards, FLOPs, time and memory per cell.

Everything here comes from the cards, so a sweep can be costed before its data or weights exist:
split sizes from the task card's ``expected_sizes`` (capped by ``--limit``; a val carved by the
protocol's fraction is taken out of train as the run would carve it), the network's geometry from
the backbone card (depth, width, heads, image size, patch size, prefix tokens), the recipe from the
cell's resolved probe config. Only the time needs a measurement: one transformer block of the card's
width, at its token count, timed on this machine's device (:func:`calibrate`).

Counting, per cell (an image forward is every block up to the deepest one the layer sets read):
the cell's probe kind says how many backbone forwards of one image it takes, what its heads cost
in FLOPs, the precision they compute in, the device memory they take and what it caches
(``aimbench.probes.ProbeKind``'s planning hooks); this module adds the backbone's FLOPs
(forwards x blocks x :func:`block_flops`), the time (FLOPs / the block's measured FLOP/s in each
precision: compute only, no decoding, augmentation, data loading or I/O; attentive heads split into
several passes when they do not fit the device are counted as one pass), the backbone's memory
(``aimbench.launch.memory``) and the feature cache's bytes (``aimbench.launch.preflight``); cells
of one backbone and task share their cache, so the sweep's total counts those once.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aimbench.cards.backbone_card import BackboneSpec
from aimbench.cards.registry import Registry
from aimbench.errors import UserError
from aimbench.launch.cells import Cell
from aimbench.launch.memory import MemoryNeed, memory_need
from aimbench.launch.preflight import cache_bytes
from aimbench.launch.shape import patch_tokens, plan_shape
from aimbench.probes import probe_kind

if TYPE_CHECKING:
    import torch

    from aimbench.launch.base import EvalPlan

CALIBRATION_REPS = 2  # timed forwards of the calibration block, after one warm-up


@dataclass(frozen=True)
class Geometry:
    """What a ViT's FLOPs depend on: blocks, width, attention heads, tokens per image."""

    depth: int
    dim: int
    heads: int
    patch_tokens: int
    prefix_tokens: int  # cls and registers

    @property
    def tokens(self) -> int:
        return self.patch_tokens + self.prefix_tokens


def block_flops(tokens: int, dim: int) -> int:
    """FLOPs of one pre-norm ViT block's forward (MLP ratio 4) on one image of N = ``tokens`` tokens
    of width D = ``dim``, counting a multiply-add as 2 FLOPs::

        24 N D^2 + 4 N^2 D

    The matrix products with weights are 12 D^2 multiply-adds per token (qkv 3 D^2, output
    projection D^2, MLP 4 D^2 + 4 D^2); attention adds N^2 D for the scores and N^2 D for the
    weighted values. Norms, softmax and GELU (O(N D)) are left out."""
    return 24 * tokens * dim**2 + 4 * tokens**2 * dim


def forward_flops(geometry: Geometry, blocks: int) -> int:
    """FLOPs of one image through the first ``blocks`` blocks (the forward stops after the deepest block read)."""
    return blocks * block_flops(geometry.tokens, geometry.dim)


def patch_count(spec: BackboneSpec) -> int:
    """Patch tokens per image, (image_size / patch)^2, the patch size from the card (model_args, AIM's
    preset or the arch name, as the disk estimate reads it; open_clip's ``vision_cfg``), else the
    family's own description of the arch."""
    found = patch_tokens(spec)
    if found:
        return found
    vision = spec.model_args.get("vision_cfg")
    size = vision.get("patch_size") if isinstance(vision, Mapping) else None
    size = size if isinstance(size, int) and size > 0 else _built_patch_size(spec)
    if size is None:
        raise UserError(f"cannot tell the patch size of backbone '{spec.name}' (arch {spec.arch}) to cost it; "
                        "give it as model_args.patch_size in its card")  # fmt: skip
    return (spec.preprocess.image_size // size) ** 2


def _built_patch_size(spec: BackboneSpec) -> int | None:
    """The patch size of the family's own model description: timm's model built on the meta device
    (no memory, no weights), open_clip's model config."""
    try:
        if spec.adapter == "timm":
            import timm
            import torch

            with torch.device("meta"):
                model = timm.create_model(spec.arch, pretrained=False, **spec.model_args)
            embed: Any = model.patch_embed  # a family's own patch-embed class: timm types no patch_size on it
            size = embed.patch_size
            return int(size[0] if isinstance(size, tuple) else size)
        if spec.adapter == "open_clip":
            import open_clip

            return int(open_clip.get_model_config(spec.arch)["vision_cfg"]["patch_size"])
    except Exception:  # noqa: BLE001 - an arch the family cannot describe: the caller says what to add to the card
        return None
    return None


def geometry(spec: BackboneSpec) -> Geometry:
    """A backbone card's ViT geometry: (image_size / patch)^2 patch tokens plus its prefix tokens."""
    return Geometry(spec.depth, spec.dim, spec.heads, patch_count(spec), len(spec.prefix_layout))


@dataclass(frozen=True, kw_only=True)
class CellCost:
    key: str
    skip: bool  # its record exists: nothing runs, and the totals leave it out
    images: dict[str, int]  # train, val, test
    forwards: int  # backbone forwards of one image
    backbone_flops: float
    head_flops: float
    seconds: float  # estimated on the calibrated device
    memory: MemoryNeed  # the backbone's device memory
    head_memory_bytes: int  # the heads' device memory while they train (the kind's estimate)
    cache_bytes: int  # the feature cache's bytes for this cell's features

    @property
    def flops(self) -> float:
        return self.backbone_flops + self.head_flops


@dataclass(frozen=True)
class SweepCost:
    cells: list[CellCost]  # in the plan's order
    device: str  # where the time was calibrated
    flops_per_second: dict[str, float]  # per backbone (and dtype): the calibrated throughput
    cache_bytes: int  # the feature cache's bytes for the cells to run, shared features counted once

    @property
    def to_run(self) -> list[CellCost]:
        return [cell for cell in self.cells if not cell.skip]

    def total(self, field: str) -> float:
        """The sum of a cell field (``forwards``, ``backbone_flops``, ``head_flops``, ``flops``, ``seconds``) over the cells to run."""
        return sum(getattr(cell, field) for cell in self.to_run)

    @property
    def images(self) -> int:
        return sum(sum(cell.images.values()) for cell in self.to_run)

    @property
    def peak_memory(self) -> MemoryNeed | None:
        """The largest device memory a cell needs: what the device must hold, as cells run one at a time."""
        return max((cell.memory for cell in self.to_run), key=lambda need: need.gb, default=None)


Throughput = Callable[[Geometry, str], float]  # (geometry, dtype) -> FLOP/s


def cell_cost(
    cell: Cell, registry: Registry, throughput: Throughput, *, key: str = "", skip: bool = False, shape: Geometry | None = None
) -> CellCost:
    """The cost of one cell (``key``: its identity's, as the plan shows it); ``throughput`` gives
    FLOP/s for a backbone's geometry and dtype (``shape``: its geometry, if known)."""
    spec, kind, config = registry.backbone(cell.backbone), probe_kind(cell.probe), cell.probe_config
    shape = shape or geometry(spec)
    planned = plan_shape(cell, registry, shape.patch_tokens)
    forwards = kind.forwards(config, planned)
    backbone = float(forwards * forward_flops(shape, max(planned.blocks) + 1))
    heads = float(kind.head_flops(config, planned))
    seconds = backbone / throughput(shape, cell.dtype) + heads / throughput(shape, kind.head_dtype(config, cell.dtype))
    features = cache_bytes([cell], registry, patches=lambda _: shape.patch_tokens)
    return CellCost(
        key=key, skip=skip, images=dict(planned.sizes), forwards=forwards, backbone_flops=backbone, head_flops=heads, seconds=seconds,
        memory=memory_need(spec, cell.dtype), head_memory_bytes=kind.head_memory_bytes(config, planned), cache_bytes=features,
    )  # fmt: skip


def plan_cost(plan: EvalPlan, throughput: Throughput | None = None, device: str | None = None) -> SweepCost:
    """Every cell of ``plan`` costed; the throughput is measured on ``device`` (default: the request's
    ``--device`` where this machine has it, else the CPU) unless given."""
    registry = plan.registry
    where = "given"
    if throughput is None:
        where, throughput = calibrated(device or plan.request.options.device, plan.request.options.batch_size)
    measured: dict[str, float] = {}

    def noted(shape: Geometry, dtype: str) -> float:
        return measured.setdefault(f"{shape.dim}x{shape.tokens} {dtype}", throughput(shape, dtype))

    shapes = {name: geometry(registry.backbone(name)) for name in dict.fromkeys(p.cell.backbone for p in plan.cells)}
    cells = [cell_cost(p.cell, registry, noted, key=p.identity.key, skip=p.skip, shape=shapes[p.cell.backbone]) for p in plan.cells]
    total_cache = cache_bytes([p.cell for p in plan.to_run], registry, patches=lambda spec: shapes[spec.name].patch_tokens)
    return SweepCost(cells, where, measured, total_cache)


def calibrated(device: str, batch_size: int) -> tuple[str, Throughput]:
    """(the device's description, a throughput measured once per width, tokens and dtype on it)."""
    import torch

    from aimbench.provenance import device_description, resolve_device

    try:
        chosen = resolve_device(device)
    except UserError:  # a Slurm plan's device is the compute node's: this machine may not have it
        chosen = torch.device("cpu")
    batch = 1 if chosen.type == "cpu" else min(batch_size, 32)

    @functools.cache
    def measure(shape: Geometry, dtype: str) -> float:
        return calibrate(shape.dim, shape.heads, shape.tokens, dtype, chosen, batch)

    return device_description(chosen), measure


def calibrate(
    dim: int, heads: int, tokens: int, dtype: str, device: torch.device | str, batch: int = 1, reps: int = CALIBRATION_REPS
) -> float:
    """FLOP/s of one randomly initialised transformer block (AIM's, the card's width and heads) on
    ``batch`` images of ``tokens`` tokens: one warm-up forward, then the fastest of ``reps`` timed
    ones. One block is enough (a forward is ``depth`` of them) and cheap even at 7B width."""
    import torch

    from aimbench.dtypes import torch_dtype
    from aimbench.models.aim import AimConfig, Block

    with torch.device("meta"):
        block = Block(AimConfig(width=dim, depth=1, heads=heads))
    block = block.to_empty(device=device).to(torch_dtype(dtype)).eval()
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.normal_(0.0, 0.02)
    x = torch.randn(batch, tokens, dim, device=device, dtype=torch_dtype(dtype))
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    times = []
    with torch.inference_mode():
        for rep in range(reps + 1):
            sync()
            start = time.perf_counter()
            block(x)
            sync()
            if rep:  # the first is the warm-up
                times.append(time.perf_counter() - start)
    return batch * block_flops(tokens, dim) / max(min(times), 1e-9)
