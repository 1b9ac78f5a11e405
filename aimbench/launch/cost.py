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
precision: compute only, no decoding, augmentation, data loading or I/O; attentive heads that do
not fit the device memory a plan assumes run their online forwards once per pass), the backbone's memory
(``aimbench.launch.memory``) and the feature cache's bytes (``aimbench.launch.preflight``); cells
of one backbone and task share their cache, so the sweep's total counts those once.

A cell that runs on several ranks (``RunOptions.ranks``) is costed per rank (``aimbench.launch.ranks``):
each rank's memory (the whole backbone, the heads of the layer sets it owns, its outgoing block
outputs), the bytes it sends to the sets' owners, and the wall time of the world; GPU-hours are that
time on every rank.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from aimbench.cards.backbone_card import BackboneSpec
from aimbench.cards.registry import Registry
from aimbench.errors import UserError
from aimbench.launch.cells import Cell
from aimbench.launch.memory import MemoryNeed, memory_need
from aimbench.launch.preflight import cache_bytes
from aimbench.launch.ranks import Ranks
from aimbench.launch.shape import patch_tokens, plan_shape
from aimbench.launch.throughput import Assumption, Rate, block_flops, calibrate
from aimbench.probes import HEADS_SHARE, Exchange, PlanShape, probe_kind

if TYPE_CHECKING:
    from aimbench.launch.base import EvalPlan


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
    """One cell's cost; on several ranks (``ranks``) its memory is one rank's and its time the world's wall time."""

    key: str
    skip: bool  # its record exists: nothing runs, and the totals leave it out
    images: dict[str, int]  # train, val, test
    forwards: int  # backbone forwards of one image
    backbone_flops: float
    head_flops: float
    seconds: float  # estimated on the calibrated device: wall time on all its ranks, compute and communication
    memory: MemoryNeed  # the backbone's device memory (every rank holds the whole backbone)
    head_memory_bytes: int  # the heads' device memory while they train, per pass, on the busiest rank (the kind's estimate)
    cache_bytes: int  # the feature cache's bytes for this cell's features
    passes: int = 1  # attentive heads that do not fit the device train in passes, each a pass over the data
    shared: tuple[Any, ...] | None = None  # the feature-cache group whose extraction other cells share (None: nothing cached)
    shared_part: dict[str, float] = field(default_factory=dict)  # that extraction's forwards, backbone_flops and seconds
    ranks: Ranks = Ranks()  # the ranks that run it together
    exchange: Exchange = Exchange()  # what one rank sends to the layer sets' owners (per step: in the largest pass)
    comm_seconds: float = 0.0  # of ``seconds``: one rank sending ``exchange.total_bytes``

    @property
    def flops(self) -> float:
        return self.backbone_flops + self.head_flops

    @property
    def gpu_seconds(self) -> float:
        """Device time held: the wall time on every rank."""
        return self.seconds * self.ranks.world

    @property
    def rank_bytes(self) -> int:
        """One rank's device memory: the whole backbone, its heads in one pass, its outgoing block outputs."""
        return round(self.memory.gb * 1e9) + self.head_memory_bytes + self.exchange.buffer_bytes


@dataclass(frozen=True)
class SweepCost:
    cells: list[CellCost]  # in the plan's order
    device: str  # where the time was calibrated, or the device assumed
    rates: dict[str, Rate]  # per block shape and dtype: the measured (or assumed) throughput
    cache_bytes: int  # the feature cache's bytes for the cells to run, shared features counted once
    ranks: Ranks = Ranks()  # the ranks each cell runs on

    @property
    def to_run(self) -> list[CellCost]:
        return [cell for cell in self.cells if not cell.skip]

    def total(self, field: str) -> float:
        """The sum of a cell field (``forwards``, ``backbone_flops``, ``head_flops``, ``flops``, ``seconds``)
        over the cells to run, counting a feature-cache extraction that cells share once: each cell
        is costed as if alone, but linear and kNN cells of one backbone and task fill one cache."""
        total = sum(getattr(cell, field) for cell in self.to_run)
        if field == "head_flops":
            return total
        part = "backbone_flops" if field == "flops" else field
        shared: dict[tuple[Any, ...], list[float]] = {}
        for cell in self.to_run:
            if cell.shared is not None:
                shared.setdefault(cell.shared, []).append(cell.shared_part[part])
        return total - sum(sum(parts) - max(parts) for parts in shared.values())

    @property
    def gpu_hours(self) -> float:
        """Device hours held: the cells' wall time (shared extractions once) on every rank of each."""
        return self.total("seconds") * self.ranks.world / 3600

    @property
    def images(self) -> int:
        return sum(sum(cell.images.values()) for cell in self.to_run)

    @property
    def peak_memory(self) -> MemoryNeed | None:
        """The largest device memory a cell's backbone needs: what the device must hold, as cells run one at a time."""
        return max((cell.memory for cell in self.to_run), key=lambda need: need.gb, default=None)

    @property
    def peak_head_bytes(self) -> int:
        """The largest device memory a cell's heads take in one pass (on its busiest rank)."""
        return max((cell.head_memory_bytes for cell in self.to_run), default=0)

    @property
    def peak_batch_bytes(self) -> int:
        """The most a rank holds of a batch beside its heads (a kind's ``Exchange.buffer_bytes``), over the cells."""
        return max((cell.exchange.buffer_bytes for cell in self.to_run), default=0)

    @property
    def peak_rank_bytes(self) -> int:
        """The largest device memory one rank of a cell takes: backbone, heads in one pass and what it holds of a batch."""
        return max((cell.rank_bytes for cell in self.to_run), default=0)

    @property
    def peak_step_bytes(self) -> int:
        """The most bytes one rank sends to the set owners in an optimizer step, over the cells."""
        return max((cell.exchange.step_bytes for cell in self.to_run), default=0)


Throughput = Callable[[Geometry, str], float]  # (geometry, dtype) -> FLOP/s
CALIBRATION_FLOPS = {False: 1e12, True: 2e9}  # per timed forward of the calibration block: on a GPU, on a CPU


def cell_cost(
    cell: Cell, registry: Registry, throughput: Throughput, *, key: str = "", skip: bool = False, shape: Geometry | None = None,
    device_gb: float | None = None, ranks: Ranks = Ranks(), chunk: int | None = None,
) -> CellCost:  # fmt: skip
    """The cost of one cell (``key``: its identity's, as the plan shows it); ``throughput`` gives
    FLOP/s for a backbone's geometry and dtype (``shape``: its geometry, if known); ``device_gb``:
    the device's memory, which decides how many passes heads that do not fit take (None: one);
    ``ranks``: the ranks that run it together, forwarding chunks of ``chunk`` images (``--batch-size``).

    On ``W`` ranks (``aimbench.launch.ranks``): every rank holds the backbone, so a rank's budget for
    its heads is what the run's is, ``HEADS_SHARE x (device - backbone)``, and the passes are the
    run's own ``plan_passes`` over the sets each rank owns; the time is the busiest rank's:
    its share of the forwards, its owned sets' head FLOPs, and its sends to the set owners."""
    spec, kind, config = registry.backbone(cell.backbone), probe_kind(cell.probe), cell.probe_config
    shape = shape or geometry(spec)
    planned = plan_shape(cell, registry, shape.patch_tokens, chunk or PlanShape.chunk)
    world = ranks.world
    memory = memory_need(spec, cell.dtype)
    budget = None if device_gb is None else int(HEADS_SHARE * (device_gb - memory.gb) * 1e9)  # what the run's budget would be
    passes = kind.passes(config, planned, budget, world)
    cached = kind.cache_blocks(config, planned)
    once = sum(planned.sizes.values()) if cached.pooled or cached.tokens else 0  # the eval-crop pass that fills the cache
    online = passes * (kind.forwards(config, planned) - once)  # each pass runs its online forwards again
    forwards = once + online
    per_forward = float(forward_flops(shape, max(planned.blocks) + 1))
    backbone = forwards * per_forward
    heads = float(kind.head_flops(config, planned))
    backbone_rate = throughput(shape, cell.dtype)
    busiest = once / world + online * ranks.forward_share(getattr(config, "batch_size", None), chunk)  # forwards on the busiest rank
    largest = replace(planned, layer_sets=list(planned.layer_sets[: -(-len(planned.layer_sets) // passes)]))  # a pass's most sets
    step, whole = kind.exchange(config, largest, world), kind.exchange(config, planned, world)
    exchange = replace(step, total_bytes=whole.total_bytes)  # a pass moves its own sets: all passes move every set once
    comm = ranks.link_seconds(exchange.total_bytes)
    head_seconds = heads * ranks.set_share(len(planned.layer_sets)) / throughput(shape, kind.head_dtype(config, cell.dtype))
    seconds = busiest * per_forward / backbone_rate + head_seconds + comm
    group = (cell.backbone, cell.weights, cell.dtype, cell.task, cell.limit, "pooled" if cached.pooled else "tokens")
    return CellCost(
        key=key, skip=skip, images=dict(planned.sizes), forwards=forwards, backbone_flops=backbone, head_flops=heads, seconds=seconds,
        memory=memory, head_memory_bytes=kind.head_memory_bytes(config, largest, world),
        cache_bytes=cache_bytes([cell], registry, patches=lambda _: shape.patch_tokens), passes=passes,
        shared=group if once else None,
        shared_part={"forwards": once, "backbone_flops": once * per_forward, "seconds": once / world * per_forward / backbone_rate},
        ranks=ranks, exchange=exchange, comm_seconds=comm,
    )  # fmt: skip


def plan_cost(
    plan: EvalPlan, throughput: Throughput | None = None, device: str | None = None, assume: Assumption | None = None
) -> SweepCost:
    """Every cell of ``plan`` costed. The rate is ``throughput`` where given, else the ``assume``d
    device's, else measured on ``device`` (default: the request's ``--device`` where this machine has
    it, else the CPU)."""
    registry = plan.registry
    rate: Callable[[Geometry, str], Rate]
    if throughput is not None:
        where, given = "given", throughput
        rate = lambda shape, dtype: Rate(given(shape, dtype))  # noqa: E731 - the given rate, as a Rate
    elif assume is not None:
        where, rate = f"an assumed device: {assume.describe()}", lambda _, dtype: assume.rate(dtype)
    else:
        where, rate = calibrated(device or plan.request.options.device, plan.request.options.batch_size)
    measured: dict[str, Rate] = {}

    def noted(shape: Geometry, dtype: str) -> float:
        return measured.setdefault(f"{shape.dim}x{shape.tokens} {dtype}", rate(shape, dtype)).flops_per_second

    shapes = {name: geometry(registry.backbone(name)) for name in dict.fromkeys(p.cell.backbone for p in plan.cells)}
    device_gb = assume.memory_gb if assume is not None else None
    options = plan.request.options
    ranks = Ranks.of(options)
    costed = functools.partial(cell_cost, registry=registry, throughput=noted, device_gb=device_gb, ranks=ranks, chunk=options.batch_size)
    cells = [costed(p.cell, key=p.identity.key, skip=p.skip, shape=shapes[p.cell.backbone]) for p in plan.cells]
    total_cache = cache_bytes([p.cell for p in plan.to_run], registry, patches=lambda spec: shapes[spec.name].patch_tokens)
    return SweepCost(cells, where, measured, total_cache, ranks)


def calibrated(device: str, batch_size: int) -> tuple[str, Callable[[Geometry, str], Rate]]:
    """(the device's description, a rate measured once per width, tokens and dtype on it)."""
    import torch

    from aimbench.provenance import device_description, resolve_device

    try:
        chosen = resolve_device(device)
    except UserError:  # a Slurm plan's device, or a dry run's, may be one this machine lacks (--assume-gpu plans for it)
        chosen = torch.device("cpu")
    target = CALIBRATION_FLOPS[chosen.type == "cpu"]

    @functools.cache
    def measure(shape: Geometry, dtype: str) -> Rate:
        # images per timed forward: as many as make the forward a real workload (a tiny block at one image times the
        # per-operation overhead of a busy machine, not its arithmetic), never more than the run's batch
        batch = max(1, min(batch_size, math.ceil(target / block_flops(shape.tokens, shape.dim))))
        return calibrate(shape.dim, shape.heads, shape.tokens, dtype, chosen, batch)

    return device_description(chosen), measure
