"""What a command checks before any work starts: the folders it will write, room for what it
writes, and the device it will run on.

Each of these used to fail late: a results path that is a file after the first cell's minutes of
feature extraction, a full disk halfway through a feature cache, a missing GPU once the data had
loaded. Here they fail in one line while the command is still planning, without importing torch.

The space estimate is a rough *lower bound* from what the plan and the cards know, so it never
refuses a run that could fit: record files (small), and the pooled features the feature cache
will hold (images x blocks x poolings x dim x 2 bytes, fp16), plus the token maps of cached
attentive probes where the card names its patch size. A backbone that already has a cache folder
counts no features at all (some or all may be cached), and cells whose record exists (skipped
without ``--overwrite``) count nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from aimbench.cards.backbone_card import BackboneSpec
from aimbench.cards.registry import Registry
from aimbench.devices import cuda_device_count, device_memory_bytes, parse_device, require_device
from aimbench.errors import UserError
from aimbench.identity import CellIdentity
from aimbench.launch.cells import Cell
from aimbench.launch.options import RunOptions
from aimbench.launch.shape import patch_tokens, plan_shape
from aimbench.paths import cache_dir
from aimbench.pretrain.metrics_file import METRICS, read_metrics
from aimbench.pretrain.request import PretrainRequest
from aimbench.probes import check_world, probe_kind
from aimbench.store.records import record_path

RECORD_BYTES = 16 * 2**10  # lower bound of one record file (a 3-block micro ViT's is 30 KB; real backbones' are larger)
FEATURE_BYTES = 2  # the feature cache stores fp16
FEATURES_DIR = "features"  # aimbench.probes.features.cache keeps <root>/features/<backbone>/<key>/


def existing_ancestor(path: Path) -> Path:
    """``path`` itself or its nearest parent that exists: where a folder will be created, and whose file system it lands on."""
    existing = path.absolute()
    while not os.path.exists(existing):  # False, not an error, where a parent may not be searched
        existing = existing.parent
    return existing


def writable_folder(folder: Path, option: str, target: Path | None = None) -> Path:
    """Check that ``folder`` is, or can become, a folder this process can write in (``target``: the
    file in it that the option names, for the message); return :func:`existing_ancestor` of it.

    Writability is tested by creating and removing a file, not with ``os.access``: root passes
    every permission check, and a read-only mount is not a permission at all."""
    shown, existing = target or folder, existing_ancestor(folder)
    if not existing.is_dir():
        where = "is a file" if existing == shown.absolute() else f"lies inside {existing}, which is a file"
        raise UserError(f"{option} {shown} {where}, not a folder")
    try:
        handle, probe = tempfile.mkstemp(prefix=".aimbench-write-test-", dir=existing)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{option} {shown}: cannot write in {existing} ({exc.strerror or exc})") from None
    return existing


def images_of(expected_sizes: Mapping[str, int], limit: int | None) -> int:
    """Images a cell reads over all splits: the card's expected sizes, each capped by ``--limit``."""
    return sum(n if limit is None else min(n, limit) for n in expected_sizes.values())


def feature_bytes(spec: BackboneSpec, images: int, pooled_blocks: int, token_blocks: int, patches: int | None = None) -> int:
    """Bytes the feature cache holds for ``images`` of a backbone: pooled tokens of ``pooled_blocks``
    (one vector per pooling, e.g. patch mean and cls) and full token maps of ``token_blocks``
    (``patches`` tokens each; default :func:`patch_tokens`)."""
    per_image = pooled_blocks * len(spec.probe_tokens) + token_blocks * (patch_tokens(spec) if patches is None else patches)
    return images * per_image * spec.dim * FEATURE_BYTES


def cache_bytes(cells: Iterable[Cell], registry: Registry, patches: Callable[[BackboneSpec], int] = patch_tokens) -> int:
    """Bytes the feature cache holds for ``cells`` as if it were empty: cells of one backbone (weights,
    dtype), task and limit share their features, so those are counted once; released heads cache nothing."""
    pooled: dict[tuple, set[int]] = defaultdict(set)
    tokens: dict[tuple, set[int]] = defaultdict(set)
    for cell in cells:
        spec = registry.backbone(cell.backbone)
        need = probe_kind(cell.probe).cache_blocks(cell.probe_config, plan_shape(cell, registry, patches(spec)))
        group = (cell.backbone, cell.weights, cell.dtype, cell.task, cell.limit)  # cells sharing cached features
        pooled[group].update(need.pooled)
        tokens[group].update(need.tokens)
    total = 0
    for group in pooled.keys() | tokens.keys():
        backbone, _, _, task, limit = group
        spec = registry.backbone(backbone)
        images = images_of(registry.task(task).expected_sizes, limit)
        total += feature_bytes(spec, images, len(pooled[group]), len(tokens[group]), patches(spec))
    return total


def estimate_bytes(
    cells: Iterable[tuple[Cell, CellIdentity]], registry: Registry, options: RunOptions, overwrite: bool = False
) -> dict[Path, int]:
    """A lower bound of the bytes the plan's (cell, identity) pairs write, per folder (results, feature cache); see the module docstring."""
    cache_root = options.cache_dir or cache_dir()
    todo = [c for c, identity in cells if overwrite or not record_path(options.results_dir, identity.record_name).exists()]
    cold = [c for c in todo if not (cache_root / FEATURES_DIR / c.backbone).exists()]  # a backbone with a cache folder may be warm
    return {options.results_dir: len(todo) * RECORD_BYTES, cache_root: cache_bytes(cold, registry)}


def byte_size(n: float) -> str:
    """Bytes in decimal units, as `df -H` shows them: 512 B, 98.1 GB."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def space_shortfalls(needs: Mapping[Path, int]) -> list[str]:
    """For each file system with less free space than the folders on it need together: what is short."""
    by_device: dict[int, tuple[Path, int]] = {}
    for folder, need in needs.items():
        if need <= 0:
            continue
        device = existing_ancestor(folder).stat().st_dev
        first, total = by_device.get(device, (folder, 0))
        by_device[device] = (first, total + need)
    short = []
    for folder, need in by_device.values():
        free = shutil.disk_usage(existing_ancestor(folder)).free
        if free < need:
            short.append(f"this plan writes at least {byte_size(need)} to {folder}, which has {byte_size(free)} free")
    return short


def require_space(needs: Mapping[Path, int]) -> None:
    """Refuse when a file system has less free space than the folders on it need together."""
    for shortfall in space_shortfalls(needs):
        raise UserError(f"not enough free space: {shortfall}")


def preflight_eval(
    cells: list[tuple[Cell, CellIdentity]], registry: Registry, options: RunOptions, overwrite: bool, local: bool, dry_run: bool = False
) -> None:
    """Every check of an ``eval`` plan that needs no data and no model; the device only for a local
    run (a Slurm job's device is the compute node's, which this machine cannot see). A dry run
    writes nothing and runs nothing, so neither free space nor the device is required (its cost
    plan shows what the run would need)."""
    writable_folder(options.results_dir, "--results")
    for cell, _ in cells:  # each rank owns whole layer sets: refused here, not in W processes started (or queued) for the cell
        check_world(cell.planned_sets, options.ranks)
    if not dry_run:
        require_space(estimate_bytes(cells, registry, options, overwrite))
    if local and not dry_run:  # a plan may be made where its device is not (--assume-gpu plans for it)
        require_device(options.device)
        require_memory(cells, registry, options, overwrite)


def require_memory(cells: list[tuple[Cell, CellIdentity]], registry: Registry, options: RunOptions, overwrite: bool) -> None:
    """Refuse now a cell whose heads cannot fit the device, by the estimate its plan prints
    (:func:`aimbench.launch.memory.cell_memory`), rather than on one huge allocation after its
    features are extracted (100,000 classes, a 200,000-point grid). The budget is ``--memory-gb``,
    else the device's memory (a GPU's, or this machine's RAM); heads that train in passes
    (attentive, on a GPU or under ``--memory-gb``) are held to their smallest pass."""
    from aimbench.launch.memory import cell_memory

    device = parse_device(options.device)
    budget = options.memory_gb * 2**30 if options.memory_gb is not None else device_memory_bytes(device)
    if budget is None:
        return
    splits = options.memory_gb is not None or device.kind == "cuda" or (device.kind == "auto" and bool(cuda_device_count()))
    for cell, identity in cells:
        if not overwrite and record_path(options.results_dir, identity.record_name).exists():
            continue
        need = cell_memory(cell, registry, splits, options.ranks, options.batch_size)  # what one rank's device must hold
        if need.heads_gb * 1e9 > budget:
            where = "--memory-gb" if options.memory_gb is not None else f"the {device} device's memory"
            raise UserError(
                f"{identity.key}: its heads need about {need.heads_gb:g} GB, more than {where} ({budget / 1e9:.3g} GB); "
                "use a protocol with a smaller grid, fewer layer sets (--layers) or a device with more memory"
            )


def preflight_pretrain(request: PretrainRequest, local: bool) -> None:
    """Every check of a pre-training request that needs no model: the run folder, a resumed run's
    metrics (damage fails now; a torn last line is dropped), and for a run here, the device."""
    writable_folder(request.out, "--out")
    if request.resume:
        read_metrics(request.out / METRICS)
    if local:
        require_device(request.device)
