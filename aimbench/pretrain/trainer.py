"""The pre-training loop: one process per device, resumable exactly, watchable while it runs.

Everything a step consumes is a pure function of (seed, step, rank): the batch (the data module)
and the prefix lengths (a generator seeded per step), so a run resumed from a checkpoint at step
k continues bit for bit on CPU. Rank 0 writes the checkpoint (every ``save_every`` steps and at
the end, atomically), one JSON line of metrics per step, the exported trunk and a loss-curve
PNG. A non-finite loss on any rank stops every rank before the optimizer step, naming the step
and keeping the last good checkpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from aimbench.atomic import atomic_write
from aimbench.distributed import World, all_finite, barrier, from_rank_zero, init_process_group
from aimbench.errors import UserError
from aimbench.models.aim import LN_EPS_METADATA, PRESETS
from aimbench.pretrain.checkpoint import RunFiles, export_trunk, load_checkpoint, save_checkpoint
from aimbench.pretrain.data import PretrainBatches, batch_loader
from aimbench.pretrain.metrics_file import metrics_text, read_metrics
from aimbench.pretrain.objective import AimPretrainModel, build_model, sample_prefix_lengths
from aimbench.pretrain.parallel import Parallelism, choose, full_state, load_full_state, local_value, parallelize
from aimbench.pretrain.recipe import PretrainConfig, build_optimizer
from aimbench.pretrain.sources import DataSource, pinned

DATA_LISTING = "data_listing"  # per source, its images' count and names' hash: what a resume must find again
DATA_CHANGES = "data_changes_at_steps"  # the steps at which a resume took other images (--allow-data-change)

# Dense bf16 peak of common training GPUs, for model-FLOPs utilisation (MFU) on CUDA only.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


@dataclass(kw_only=True)
class StepMetrics:
    step: int
    loss: float
    lr: float
    grad_norm: float
    images_per_s: float
    tokens_per_s: float
    skipped_images: int
    mfu: float | None = None


@dataclass
class TrainOutcome:
    history: list[StepMetrics]
    model: AimPretrainModel  # unwrapped (no DDP / compile wrapper); identical on every rank (sharded in place under FSDP)


def model_flops_per_image(config: PretrainConfig) -> float:
    """Forward + backward matmul FLOPs per image (6 x params x tokens, plus attention scores)."""
    trunk = PRESETS[config.preset]
    tokens = (config.image_size // trunk.patch_size) ** 2
    head = config.resolved_head
    matmul_params = trunk.depth * 12 * trunk.width**2 + head.blocks * 2 * head.mlp_ratio * head.width**2
    attention = trunk.depth * 2 * tokens * trunk.width  # QK^T and AV, per token
    return 6.0 * tokens * (matmul_params + attention)


def _peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)


def _trim_metrics(path: Path, start: int) -> None:
    """On resume, drop metric lines of steps the interrupted run did after its last checkpoint, and
    a last line torn by the kill: the file is whole again before this run appends to it."""
    if not path.is_file():
        return
    text = metrics_text([row for row in read_metrics(path) if row["step"] < start])
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def plot_loss(metrics: Path, out: Path) -> None:
    from matplotlib.figure import Figure

    rows = read_metrics(metrics)
    figure = Figure(figsize=(6.4, 3.6), layout="constrained")
    axes = figure.subplots()
    axes.plot([r["step"] for r in rows], [r["loss"] for r in rows], linewidth=1.0)
    axes.set_xlabel("step")
    axes.set_ylabel("normalised-pixel MSE")
    axes.set_yscale("log")
    axes.grid(alpha=0.3)
    figure.savefig(out, format="png", metadata={"Software": None})


def run_identity(config: PretrainConfig, sources: list[DataSource], world: World) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the recipe, the data (streams pinned to their
    commits) and, for a run that streams, its world size (``aimbench.pretrain.data``: Determinism)."""
    identity: dict[str, Any] = {**config.to_dict(), "data": [asdict(source) for source in sources]}
    if any(source.kind == "stream" for source in sources):
        identity["stream_world_size"] = world.size
    return json.loads(json.dumps(identity))


def _resume_state(files: RunFiles, wanted: dict[str, Any], world: World, plan: Parallelism, allow_data_change: bool) -> dict[str, Any]:
    """The checkpoint to continue (checked against ``wanted``: the recipe, the data sources and the
    images they list, the last unless ``allow_data_change``); under FSDP only rank 0 holds its tensors."""
    state = load_checkpoint(files.checkpoint, verify=world.is_main)  # rank 0 checks; a damaged file stops the job there
    saved = state["config"]
    if saved.get("stream_world_size", world.size) != world.size:
        raise UserError(f"this run streams its data and started on {saved['stream_world_size']} rank(s); it resumes exactly only "
                        f"on as many, not {world.size}")  # fmt: skip
    # keys a checkpoint from an older aimbench lacks (e.g. "data") are not compared; the history of data changes is no setting
    changed = sorted(k for k in wanted if k in saved and saved[k] != wanted[k] and k != DATA_CHANGES)
    if DATA_LISTING in changed and not allow_data_change:
        raise UserError(
            f"--resume on other images than the run started with ({_listing_change(saved[DATA_LISTING], wanted[DATA_LISTING])}); "
            "the trunk would differ from an uninterrupted run: restore the data, or pass --allow-data-change (recorded in the run)"
        )
    changed = [k for k in changed if k != DATA_LISTING]
    if changed:
        hint = "; a hub dataset may have changed since: pin the run's revision (hf://datasets/OWNER/NAME@SHA)" if "data" in changed else ""
        raise UserError(
            f"--resume with a different configuration ({', '.join(changed)}); use the run's own settings ({files.config}){hint}"
        )
    if plan.sharded and not world.is_main:  # rank 0 broadcasts the tensors into the shards
        state["model"], state["optimizer"] = {}, {}
    return state


def _counts(listed: list[dict[str, Any] | None]) -> str:
    return "+".join(str(item["images"]) if item else "stream" for item in listed)


def _listing_change(saved: list[dict[str, Any] | None], now: list[dict[str, Any] | None]) -> str:
    return f"{_counts(saved)} image(s) then, {_counts(now)} now" if _counts(saved) != _counts(now) else "as many images, other names"


def train(
    config: PretrainConfig,
    sources: list[DataSource],
    out: Path,
    device: torch.device,
    world: World = World(),
    resume: bool = False,
    workers: int = 0,
    use_compile: bool = False,
    until: int | None = None,
    on_step: Callable[[StepMetrics], None] = lambda _: None,
    plan: Parallelism | None = None,
    allow_data_change: bool = False,
) -> TrainOutcome:
    """Train to ``config.steps`` (continuing a checkpoint with ``resume``): this call's metrics and the model.

    ``until`` stops early after that many steps, with a checkpoint, as a preemption would: the
    schedule still runs to ``config.steps`` when the run is resumed. ``plan`` (default: ``choose``'s
    auto) says DDP or FSDP and whether blocks recompute their activations; it is recorded with the
    run but is not part of its configuration, so a run may resume under another plan.
    """
    files = RunFiles.of(out)
    plan = plan or choose(config.preset, world)
    if config.batch_size % world.size:
        raise UserError(f"--batch-size {config.batch_size} is not divisible by the {world.size} ranks")
    files.require_new_or_resumed(resume)
    init_process_group(world, device)
    sources = from_rank_zero(lambda: pinned(sources), world)
    per_rank = config.batch_size // world.size
    data = PretrainBatches(sources, config.image_size, per_rank, config.seed, config.mean, config.std, world.rank, world.size,
                           config.color_jitter)  # fmt: skip
    identity = {**run_identity(config, sources, world), DATA_LISTING: data.listing()}
    state = _resume_state(files, identity, world, plan, allow_data_change) if resume and files.checkpoint.exists() else None
    if state is not None:  # the data changes a resume was allowed, by the step they came in at: recorded with the run
        saved = state["config"]
        moved = DATA_LISTING in saved and saved[DATA_LISTING] != identity[DATA_LISTING]
        changes = [*saved.get(DATA_CHANGES, []), *([int(state["step"])] if moved else [])]
        identity.update({DATA_CHANGES: changes} if changes else {})  # none: the run is as an uninterrupted one, byte for byte
    model = build_model(config).to(device)
    bf16 = device.type == "cuda" and config.dtype == "bf16"
    wrapped: Callable[..., Any] = parallelize(model, plan, device, bf16)  # then perhaps compiled: a callable, not a Module
    optimizer, scheduler = build_optimizer(model, config)  # after sharding: AdamW steps the local shards
    start = 0
    if state is not None:
        load_full_state(model, optimizer, state, plan)
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start = int(state["step"])
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        text = json.dumps({**identity, "runtime": {"world_size": world.size, **asdict(plan)}}, indent=1) + "\n"
        atomic_write(files.config, lambda handle: handle.write(text.encode("utf-8")))
        _trim_metrics(files.metrics, start)
    if use_compile:
        wrapped = torch.compile(wrapped)
    end = config.steps if until is None else min(until, config.steps)
    loader = batch_loader(data, start, max(end - start, 0), workers)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext()
    tokens_per_image = (config.image_size // PRESETS[config.preset].patch_size) ** 2
    peak, flops_per_image = _peak_flops(device), model_flops_per_image(config)
    history: list[StepMetrics] = []
    last_saved, saved_state = start, None
    clock = time.perf_counter()
    for step, (images, skipped) in zip(range(start, end), loader):
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step * 1009 + world.rank)
        prefix = sample_prefix_lengths(images.shape[0], tokens_per_image, generator).to(device)
        with autocast:
            loss = wrapped(images.to(device, non_blocking=True), prefix)
        if not all_finite(loss, world):
            raise UserError(f"the loss became {loss.item()} at step {step}; stopped before updating, the last good checkpoint "
                            f"(step {last_saved}) is in {files.checkpoint}; lower --lr or check the data")  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = local_value(torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip))
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        now = time.perf_counter()
        images_per_s = config.batch_size / max(now - clock, 1e-9)
        clock = now
        metrics = StepMetrics(
            step=step, loss=loss.item(), lr=lr, grad_norm=grad_norm.item(), images_per_s=images_per_s,
            tokens_per_s=images_per_s * tokens_per_image, skipped_images=int(skipped), mfu=images_per_s * flops_per_image / peak if peak else None,
        )  # fmt: skip
        history.append(metrics)
        on_step(metrics)
        done = step + 1
        if world.is_main:
            with files.metrics.open("a", encoding="utf-8") as handle:
                handle.write(metrics_text([metrics.__dict__]))
        if done % config.save_every == 0 or done == end:
            saved_state, optimizer_state = full_state(model, optimizer)  # collective: every rank takes part
            if world.is_main:
                save_checkpoint(files.checkpoint, saved_state, optimizer_state, scheduler, done, identity)
            last_saved = done
    if end == config.steps:
        final_state = saved_state if saved_state is not None and last_saved == end else full_state(model, optimizer)[0]
        if world.is_main:
            export_trunk(final_state, files.trunk, {"preset": config.preset, "steps": str(config.steps), "config": json.dumps(identity),
                                                    LN_EPS_METADATA: repr(config.ln_eps)})  # fmt: skip
            plot_loss(files.metrics, files.loss_curve)
    barrier(world)
    return TrainOutcome(history, model)


def summary(history: list[StepMetrics]) -> dict[str, Any]:
    """First and last loss and mean throughput of a run, for the closing line."""
    if not history:
        return {}
    return {"first_loss": history[0].loss, "last_loss": history[-1].loss,
            "images_per_s": sum(m.images_per_s for m in history) / len(history)}  # fmt: skip
