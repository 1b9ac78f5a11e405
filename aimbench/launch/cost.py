"""What a plan costs before it runs: images, backbone forwards, FLOPs, time and memory per cell.

Everything here comes from the cards, so a sweep can be costed before its data or weights exist:
split sizes from the task card's ``expected_sizes`` (capped by ``--limit``; a val carved by the
protocol's fraction is taken out of train as the run would carve it), the network's geometry from
the backbone card (depth, width, heads, image size, patch size, prefix tokens), the recipe from the
cell's resolved probe config. Only the time needs a measurement: one transformer block of the card's
width, at its token count, timed on this machine's device (:func:`calibrate`).

Counting, per cell (an image forward is every block up to the deepest one the layer sets read):

* backbone forwards: cached features (linear and kNN always extract the eval-crop splits, attentive
  with ``--data-mode cached``) take one forward per image of train, val and test; online training
  adds ``epochs x train`` forwards of augmented views (online attentive takes no eval-crop train:
  ``epochs x train + val + test``); released heads read val and test;
* backbone FLOPs: forwards x blocks x :func:`block_flops`;
* head FLOPs: the heads' forward per image (:func:`linear_head_flops`, :func:`attentive_head_flops`,
  kNN's similarities), x3 for an attentive training step (forward, and a backward through the
  head's inputs and weights), x2 for a linear one (no gradient reaches the frozen features), over
  ``epochs x train``, plus one forward over val and test. Linear heads under successive halving
  (``grid_search = "halving"``, opt-in) train the share of head-steps the halving schedule keeps
  (``aimbench.probes.active_share``, about a fifth), the full grid (the default) all of them;
* time: backbone FLOPs / the block's measured FLOP/s in the cell's dtype, plus head FLOPs / that
  FLOP/s in bf16 for linear heads trained in bf16 (``head_precision``), else in the cell's dtype. Compute only: decoding, augmentation,
  data loading and I/O are not counted, and attentive heads split into several passes when they do
  not fit the device (each pass runs the backbone again) are counted as one pass;
* memory: the device memory a cell needs (the card's hint, else an estimate from its size:
  ``aimbench.launch.slurm.resources.memory_need``) and the bytes its features take in the feature
  cache (``aimbench.launch.preflight``); cells of one backbone and task share their cache, so the
  sweep's total counts those once.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aimbench.cards.backbone_card import CLS, PATCH_MEAN, BackboneSpec
from aimbench.cards.registry import Registry
from aimbench.cards.task_card import TaskSpec
from aimbench.errors import UserError
from aimbench.launch.cells import Cell
from aimbench.launch.preflight import cache_bytes, patch_tokens
from aimbench.launch.slurm.resources import MemoryNeed, memory_need
from aimbench.probes import AttentiveProbeConfig, KnnProbeConfig, LinearProbeConfig, active_share, blocks_needed, parse_layer_sets

if TYPE_CHECKING:
    from aimbench.launch.base import EvalPlan

SPLITS = ("train", "val", "test")
TRAIN_STEP = 3  # FLOPs of an attentive training step over a forward's: the forward, and a backward of twice its cost
LINEAR_TRAIN_STEP = 2  # a linear head's: the forward and the weight gradient (the features are frozen)
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


def linear_head_flops(inputs: int, classes: int) -> int:
    """Forward FLOPs of linear heads over ``inputs`` feature values in all (their widths summed) for one image."""
    return 2 * inputs * classes


def attentive_head_flops(patch_tokens: int, dim: int, heads: int, classes: int) -> int:
    """Forward FLOPs of one AIM attentive head on one image, as ``AttentiveGrid.forward`` computes it:
    the learned query moved into token space, so per attention head the scores and the weighted sum
    of the N tokens cost 2 N D each (4 h N D in all), then the value projection of the pooled token
    (2 D^2 over all heads) and the classifier (2 D C)."""
    return 4 * heads * patch_tokens * dim + 2 * dim**2 + 2 * dim * classes


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
            size = model.patch_embed.patch_size
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


def split_sizes(task: TaskSpec, limit: int | None, val_fraction: float | None) -> dict[str, int]:
    """Images per split as a run would see them, from the card's expected sizes: a val carved by the
    protocol's fraction leaves train (rounded up, as the stratified split rounds it), then ``--limit`` caps each."""
    sizes = dict(task.expected_sizes)
    if "val" not in sizes:
        val = math.ceil(sizes["train"] * (val_fraction or 0.0))
        sizes = {"train": sizes["train"] - val, "val": val, "test": sizes["test"]}
    return {name: sizes[name] if limit is None else min(sizes[name], limit) for name in SPLITS}


@dataclass(frozen=True)
class CellCost:
    key: str
    skip: bool  # its record exists: nothing runs, and the totals leave it out
    images: dict[str, int]  # train, val, test
    forwards: int  # backbone forwards of one image
    backbone_flops: float
    head_flops: float
    seconds: float  # estimated on the calibrated device
    memory: MemoryNeed  # device memory
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


def _forwards(cell: Cell, sizes: Mapping[str, int]) -> int:
    once, scored = sum(sizes.values()), sizes["val"] + sizes["test"]  # every split through the backbone once; val and test
    config = cell.probe_config
    if config is None:  # released heads
        return scored
    if isinstance(config, AttentiveProbeConfig) and config.data_mode == "online":  # augmented views, then val and test
        return config.epochs * sizes["train"] + scored
    if isinstance(config, LinearProbeConfig) and config.data_mode == "online":  # eval crops of every split, then augmented views
        return once + config.epochs * sizes["train"]
    return once


def _head_flops(cell: Cell, spec: BackboneSpec, shape: Geometry, classes: int, sizes: Mapping[str, int]) -> float:
    config = cell.probe_config
    sets = parse_layer_sets(cell.layers, spec.depth, spec.windows)
    evaluated = sizes["val"] + sizes["test"]
    if config is None:  # one released attentive head, scored on val and test
        return attentive_head_flops(shape.patch_tokens, spec.dim, spec.heads, classes) * evaluated
    if isinstance(config, AttentiveProbeConfig):
        per_image = len(sets) * len(config.learning_rates) * len(config.weight_decays)
        per_image *= attentive_head_flops(shape.patch_tokens, spec.dim, spec.heads, classes)
        return per_image * (TRAIN_STEP * config.epochs * sizes["train"] + evaluated)
    both = PATCH_MEAN in spec.probe_tokens and CLS in spec.probe_tokens  # a head reads both, concatenated
    inputs = len(sets) * spec.dim * (len(spec.probe_tokens) + 2 * both)  # every head input's width, summed
    if isinstance(config, KnnProbeConfig):  # each val and test image against every train image, per input
        return 2 * inputs * sizes["train"] * evaluated
    points = len(config.learning_rates) * len(config.weight_decays)
    per_image = points * linear_head_flops(inputs, classes)
    training = LINEAR_TRAIN_STEP * config.epochs * sizes["train"]
    if config.grid_search == "halving":  # the share of head-steps successive halving keeps training
        steps = config.epochs * -(-sizes["train"] // config.batch_size)
        training *= active_share(steps, points * (len(spec.probe_tokens) + both))
    return round(per_image * (training + evaluated))


Throughput = Callable[[Geometry, str], float]  # (geometry, dtype) -> FLOP/s


def cell_cost(cell: Cell, registry: Registry, throughput: Throughput, skip: bool = False, shape: Geometry | None = None) -> CellCost:
    """The cost of one cell; ``throughput`` gives FLOP/s for a backbone's geometry and dtype (``shape``: its geometry, if known)."""
    spec, task = registry.backbone(cell.backbone), registry.task(cell.task)
    config = cell.probe_config
    val_fraction = config.val_fraction if config is not None else registry.protocol(cell.protocol).val_fraction.value
    sizes = split_sizes(task, cell.limit, val_fraction)
    shape = shape or geometry(spec)
    blocks = max(blocks_needed(parse_layer_sets(cell.layers, spec.depth, spec.windows))) + 1
    forwards = _forwards(cell, sizes)
    backbone = float(forwards * forward_flops(shape, blocks))
    heads = float(_head_flops(cell, spec, shape, task.num_classes, sizes))
    bf16_heads = isinstance(cell.probe_config, LinearProbeConfig) and cell.probe_config.head_precision == "bf16"
    seconds = backbone / throughput(shape, cell.dtype) + heads / throughput(shape, "bf16" if bf16_heads else cell.dtype)
    features = cache_bytes([cell], registry, patches=lambda _: shape.patch_tokens)
    return CellCost(cell.key, skip, sizes, forwards, backbone, heads, seconds, memory_need(spec, cell.dtype), features)


def plan_cost(plan: EvalPlan, throughput: Throughput | None = None, device: str | None = None) -> SweepCost:
    """Every cell of ``plan`` costed; the throughput is measured on ``device`` (default: the request's
    ``--device`` where this machine has it, else the CPU) unless given."""
    registry = plan.request.registry()
    where = "given"
    if throughput is None:
        where, throughput = calibrated(device or plan.request.options.device, plan.request.options.batch_size)
    measured: dict[str, float] = {}

    def noted(shape: Geometry, dtype: str) -> float:
        return measured.setdefault(f"{shape.dim}x{shape.tokens} {dtype}", throughput(shape, dtype))

    shapes = {name: geometry(registry.backbone(name)) for name in dict.fromkeys(p.cell.backbone for p in plan.cells)}
    cells = [cell_cost(p.cell, registry, noted, p.skip, shapes[p.cell.backbone]) for p in plan.cells]
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


def calibrate(dim: int, heads: int, tokens: int, dtype: str, device: object, batch: int = 1, reps: int = CALIBRATION_REPS) -> float:
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
