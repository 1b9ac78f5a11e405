"""``aimbench eval``: one EvalRequest from the options, planned and run by the chosen launcher."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from aimbench.cards.task_card import SPLITS
from aimbench.cli.display import RichDisplay
from aimbench.cli.options import (
    CardsOption,
    ClusterChoice,
    DataRootOption,
    NodesOption,
    ResultsOption,
    TasksPerNodeOption,
    check_job_shape,
    cluster_options,
    make_console,
)
from aimbench.errors import UserError
from aimbench.identity import DEFAULT_PROTOCOLS
from aimbench.launch.base import EvalPlan, Launcher
from aimbench.launch.cost import CellCost, SweepCost, plan_cost
from aimbench.launch.memory import MemoryNeed
from aimbench.launch.preflight import byte_size, estimate_bytes, space_shortfalls
from aimbench.launch.request import EvalRequest
from aimbench.launch.throughput import GPUS, Assumption
from aimbench.launch.world import launched_world

DEFAULT_PROTOCOL_HELP = ", ".join(f"{kind} {name}" for kind, name in DEFAULT_PROTOCOLS.items())
WEIGHTS_HELP = "Override the card's weights: random | timm | open_clip:TAG | PATH | hf:OWNER/REPO/FILE."


def run_request(
    request: EvalRequest, cluster: ClusterChoice, console: Console, assume: Assumption | None = None, launcher: Launcher | None = None,
    display: RichDisplay | None = None,
) -> None:  # fmt: skip
    """Plan ``request``; run it here (each cell's table as it finishes) or submit it, saying where it
    went; a dry run prints its cost, on ``assume``'s device where given. ``launcher`` (with the
    ``display`` it shows on): one built already, else ``cluster``'s."""
    if assume is not None and not cluster.dry_run:
        raise UserError("--assume-gpu and --assume-tflops cost a plan for a device not here; give --dry-run too")
    display = display or RichDisplay(console)
    launcher = launcher or cluster.launcher(display)
    plan = launcher.plan(request, dry_run=cluster.dry_run)
    if not launcher.local:
        print_plan(plan, console)
    if cluster.dry_run:
        print_cost(plan, console, here=launcher.local, assume=assume)
        console.print("dry run: nothing run" if launcher.local else "dry run: nothing submitted")
        return
    if not launcher.local:
        if not plan.to_run:
            console.print("nothing to submit")
            return
        launched = launcher.submit(plan)
        ids = sorted({job_id.split("_")[0] for job_id in launched.job_ids})
        state = launched.state_file  # a remote launcher always writes one
        logs = state.with_suffix("") if state is not None else None
        console.print(f"submitted {len(launched.job_ids)} cell(s) as Slurm job {', '.join(ids)}; state: {state}; logs: {logs}/",
                      soft_wrap=True)  # fmt: skip
        return
    console.print(f"[bold]{len(plan.cells)} cell(s)[/bold] → {request.options.results_dir / 'runs'}")
    try:
        launcher.submit(plan)
    except KeyboardInterrupt as stopped:
        from aimbench.launch.resume import resume_note

        running = display.running
        what = resume_note(request.options.results_dir, running.stem, running.probe) if running else "finished cells are kept"
        print(f"interrupted: no record written for {running.key if running else 'the running cell'}; {what}", file=sys.stderr)
        raise typer.Exit(128 + getattr(stopped, "signum", 2)) from None  # 130 for Ctrl-C, 143 for SIGTERM


def print_plan(plan: EvalPlan, console: Console) -> None:
    """The cells to submit, grouped in arrays by equal resources, and those skipped because their record exists."""
    from aimbench.launch.slurm.launcher import arrays

    groups = arrays(plan)
    extra = f" in {len(groups)} array(s)" if len(groups) > 1 else ""
    table = Table(title=f"{len(plan.to_run)} cell(s) to submit{extra}, {len(plan.skipped)} skipped (record exists; --rerun to redo)")
    for column in ("cell", "action", "array", "memory need"):
        table.add_column(column)
    for number, (_, members) in enumerate(groups, 1):
        for planned in members:
            table.add_row(planned.identity.key, "submit", str(number), planned.need.describe() if planned.need else "")
    for planned in plan.skipped:
        table.add_row(planned.identity.key, "skip", "", "")
    console.print(table)
    for number, (parameters, _) in enumerate(groups, 1):
        shown = {k: v for k, v in parameters.items() if v not in (None, {}, 0) or k == "gpus_per_node"}
        console.print(f"array {number}, resources per cell: " + ", ".join(f"{k}={v}" for k, v in shown.items()), soft_wrap=True)


def _flops(flops: float) -> str:
    """FLOPs with an SI prefix and 3 digits: 476 PFLOP, 45.4 EFLOP, 1.00 ZFLOP."""
    for prefix, size in (("Z", 1e21), ("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if flops >= size:
            return f"{_three_digits(flops / size)} {prefix}FLOP"
    return f"{_three_digits(flops)} FLOP"


def _three_digits(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _duration(seconds: float) -> str:
    for limit, unit, size in ((120, "s", 1), (120 * 60, "min", 60), (72 * 3600, "h", 3600), (730 * 86400, "d", 86400)):
        if seconds < limit:
            return f"{seconds / size:.1f} {unit}" if seconds < 10 * size else f"{seconds / size:,.0f} {unit}"
    return f"{seconds / (365.25 * 86400):,.1f} years"


def _memory(need: MemoryNeed) -> str:
    return f"{need.gb:g} GB" if need.source == "card" else f"{need.gb:g} GB ({need.source})"


def _heads(cell: CellCost) -> str:
    shown = byte_size(cell.head_memory_bytes)
    return f"{shown} x{cell.passes} passes" if cell.passes > 1 else shown


def _volume(size: float) -> str:
    """Bytes sent, past the terabytes a disk shows: 8.6 GB, 1.06 PB."""
    return f"{_three_digits(size / 1e15)} PB" if size >= 1e15 else byte_size(size)


def _rank_columns(cost: SweepCost) -> tuple[str, ...]:
    """The columns a cell on several ranks adds: what one rank sends to the set owners per step, and holds."""
    return ("sent per\nstep", "memory\nper rank") if cost.ranks.world > 1 else ()


def _rank_note(cost: SweepCost) -> str:
    """The summary's per-rank memory and communication, on several ranks."""
    peak, sent = cost.peak_memory, max((cell.exchange.total_bytes for cell in cost.to_run), default=0)
    comm = max((cell.comm_seconds for cell in cost.to_run), default=0.0)
    return (f"per rank: device memory up to {byte_size(cost.peak_rank_bytes)} (the backbone, {peak.describe() if peak else '0 GB'}, "
            f"up to {byte_size(cost.peak_head_bytes)} of heads in one pass: attentive heads that do not fit train in passes, "
            f"and up to {byte_size(cost.peak_batch_bytes)} of a batch's tokens or outputs), "
            f"up to {byte_size(cost.peak_step_bytes)} sent per step to the layer sets' owners (up to {_volume(sent)} and "
            f"{_duration(comm)} a cell)")  # fmt: skip


def print_cost(plan: EvalPlan, console: Console, here: bool = True, assume: Assumption | None = None) -> None:
    """Per cell: images per split, backbone forwards, FLOPs, estimated time and memory (one rank's, and
    what it sends, where a cell runs on several); then the sweep's totals."""
    cost = plan_cost(plan, assume=assume)
    ranks = cost.ranks
    if assume is not None:
        where = f"on {cost.device}"
    elif here:
        where = f"on {cost.device}, one cell after another"
    else:
        where = f"of compute at the speed of this machine's {cost.device}, which the cluster's nodes may not share (arrays run cells side by side)"
    table = Table(title=f"cost of {len(cost.to_run)} cell(s) to run, {len(cost.cells) - len(cost.to_run)} skipped (record exists)"
                  + (f", each on {ranks.describe()}" if ranks.world > 1 else ""))  # fmt: skip
    time = f"est. time\non {ranks.world}" if ranks.world > 1 else "est. time"
    columns = (*SPLITS, "forwards", "backbone\nFLOPs", "heads\nFLOPs", time, "device\nmemory", "heads'\nmemory", "feature\ncache",
               *_rank_columns(cost))  # fmt: skip
    table.add_column("cell", overflow="fold", min_width=min(24, max(len(cell.key) for cell in cost.cells)))
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True)
    for cell in cost.cells:
        images = [f"{cell.images[name]:,}" for name in SPLITS]
        if cell.skip:
            table.add_row(cell.key, *images, "skip", *[""] * (len(columns) - len(images) - 1))
            continue
        per_rank = (byte_size(cell.exchange.step_bytes), byte_size(cell.rank_bytes)) if ranks.world > 1 else ()
        table.add_row(cell.key, *images, f"{cell.forwards:,}", _flops(cell.backbone_flops), _flops(cell.head_flops),
                      _duration(cell.seconds), _memory(cell.memory), _heads(cell), byte_size(cell.cache_bytes), *per_rank)  # fmt: skip
    split_totals = [f"{sum(c.images[name] for c in cost.to_run):,}" for name in SPLITS]
    peak, heads = cost.peak_memory, cost.peak_head_bytes
    peaks = (f"max {byte_size(cost.peak_step_bytes)}", f"max {byte_size(cost.peak_rank_bytes)}") if ranks.world > 1 else ()
    table.add_section()
    table.add_row("total", *split_totals, f"{cost.total('forwards'):,.0f}", _flops(cost.total("backbone_flops")),
                  _flops(cost.total("head_flops")), _duration(cost.total("seconds")), f"max {peak.gb:g} GB" if peak else "",
                  f"max {byte_size(heads)}", byte_size(cost.cache_bytes), *peaks)  # fmt: skip
    console.print(table)
    on = f" on {ranks.describe()}" if ranks.world > 1 else ""
    gpu_hours = f" = {cost.gpu_hours:,.0f} GPU-hours" if assume is not None or ranks.world > 1 else ""
    memory = (_rank_note(cost) if ranks.world > 1 else f"device memory up to {peak.describe() if peak else '0 GB'} per cell for the "
              f"backbone and {byte_size(heads)} for its heads (attentive heads that do not fit train in passes)")  # fmt: skip
    console.print(f"total: {len(cost.to_run)} cell(s), {cost.images:,} images, {cost.total('forwards'):,.0f} backbone forwards, "
                  f"{_flops(cost.total('flops'))}, est. {_duration(cost.total('seconds'))}{on}{gpu_hours} {where}; "
                  f"{memory}; feature cache {byte_size(cost.cache_bytes)}", soft_wrap=True)  # fmt: skip
    rates = ", ".join(f"{shape} {rate.describe()}" for shape, rate in cost.rates.items())
    timed = f"time at {rates}" if assume is not None else f"time from one block of each width timed here ({rates}, median and spread)"
    links = f"; sends at {ranks.link_description()}, after the compute (no overlap)" if ranks.world > 1 else ""
    console.print("sizes from the task cards; FLOPs from the backbone cards (24·N·D² + 4·N²·D per block and image of N tokens of "
                  f"width D); {timed}, compute only (no data loading){links}; a feature-cache extraction cells share is counted once "
                  "in the totals", soft_wrap=True)  # fmt: skip
    if not here:
        _warn_past_time_limit(plan, cost, console)
    registry, options = plan.registry, plan.request.options
    for shortfall in space_shortfalls(
        estimate_bytes([(p.cell, p.identity) for p in plan.cells], registry, options, plan.request.overwrite)
    ):
        console.print(f"note: not enough free space to run it: {shortfall}", soft_wrap=True)


def _warn_past_time_limit(plan: EvalPlan, cost: SweepCost, console: Console) -> None:
    """Cells estimated past their job's time limit: Slurm stops them there; each requeue resumes from its checkpoint."""
    late = [
        (cell, planned.resources["timeout_min"])
        for cell, planned in zip(cost.cells, plan.cells)
        if not cell.skip and planned.resources.get("timeout_min") and cell.seconds > 60 * planned.resources["timeout_min"]
    ]
    if late:
        cell, limit = max(late, key=lambda pair: pair[0].seconds / pair[1])
        console.print(f"note: {len(late)} cell(s) are estimated past their job's time limit (longest: {cell.key}, "
                      f"{_duration(cell.seconds)} against --time {limit} min, about {math.ceil(cell.seconds / 60 / limit)} "
                      "requeues); raise --time, or let Slurm requeue them: each resumes from its last checkpoint",
                      soft_wrap=True)  # fmt: skip


@cluster_options()
def evaluate(
    backbone: Annotated[str, typer.Option("--backbone", "-b", help="Backbone variant(s), comma-separated.")],
    tasks: Annotated[str, typer.Option("--tasks", "-t", help="Task(s), suite(s) (all = the AIM paper's 15) or tag:NAME (e.g. tag:medical), comma-separated.")],
    probe: Annotated[str, typer.Option(help="linear | knn | attentive (comma-separated; trained and selected here) | official (released heads, e.g. AIM's).")] = "linear",
    layers: Annotated[Optional[str], typer.Option(help="all | last | best | avg:A-B windows | block indices like 0,5,-1, comma-separated; for --probe official: head names (last, best). Default: every block plus the card's published windows (AIM: all,last,best).", show_default=False)] = None,
    limit: Annotated[Optional[int], typer.Option(help="Cap images per split (smoke runs; recorded).")] = None,
    seed: Annotated[Optional[str], typer.Option(help="Seed(s), comma-separated; each is its own cell \\[default: 0].", show_default=False)] = None,
    seeds: Annotated[Optional[int], typer.Option(help="Repeat each cell with seeds 0..N-1: a seed varies the heads' init and data order only, never the split (reports show the mean over seeds, ×S, with one interval over examples and seeds).", show_default=False)] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option(help="Backbone precision: fp32 | bf16 | fp16 (recorded; part of the cell).")] = "fp32",
    results: ResultsOption = Path("results"),
    data_root: DataRootOption = None,
    weights: Annotated[Optional[str], typer.Option(help=WEIGHTS_HELP)] = None,
    name: Annotated[Optional[str], typer.Option("--name", "--tag", help="What reports call the --weights override (default: the run folder's or file's name).", show_default=False)] = None,
    protocol: Annotated[Optional[str], typer.Option(help="The probe recipe: a protocol card (aimbench ls protocols); tasks and the options below may override its fields. Default: each probe's published recipe, " + DEFAULT_PROTOCOL_HELP + ".", show_default=False)] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs of linear and attentive probes (default: the protocol's).", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option(help="Images per backbone forward.")] = 64,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 0,
    data_mode: Annotated[Optional[str], typer.Option(help="online (augmented views through the backbone each step) | cached (eval-crop features extracted once), for linear and attentive probes; default: the protocol's; kNN is always cached.", show_default=False)] = None,
    grid_search: Annotated[Optional[str], typer.Option(help="Linear probes: full (every head of the grid trained to the end) | halving (successive halving on val: about a fifth of the head-steps, numbers may differ); default: the protocol's (full).", show_default=False)] = None,
    head_precision: Annotated[Optional[str], typer.Option(help="Linear probes: bf16 (training products in bf16 over fp32 weights and optimizer; every score in fp32) | fp32; default: the protocol's (fp32).", show_default=False)] = None,
    memory_gb: Annotated[Optional[float], typer.Option(help="Device memory for the heads, GiB: attentive heads that do not fit train in passes; a cell whose heads exceed it (or the device's memory) is refused up front (default: 90% of free GPU memory).", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", "--rerun", help="Re-run cells whose record already exists.")] = False,
    cards: CardsOption = None,
    assume_gpu: Annotated[Optional[str], typer.Option(help=f"With --dry-run: cost the plan on a GPU this machine lacks ({' | '.join(GPUS)}): its datasheet peak, memory and GPU-hours.", show_default=False)] = None,
    assume_tflops: Annotated[Optional[float], typer.Option(help="With --dry-run: cost the plan at this peak TFLOP/s (any device; replaces --assume-gpu's peak).", show_default=False)] = None,
    utilisation: Annotated[Optional[float], typer.Option(help="Share of the assumed peak reached (default 0.4).", show_default=False)] = None,
    gpus: Annotated[Optional[int], typer.Option(help="Local runs: ranks per cell, one process per GPU (data-parallel over one cell; GPUs 0..N-1); with --device cpu, N CPU processes on gloo. Under torchrun the world is given: leave it out. On Slurm: --nodes and --gpus-per-node.", show_default=False)] = None,
    nodes: NodesOption = 1,
    tasks_per_node: TasksPerNodeOption = None,
    *,
    cluster: ClusterChoice,
) -> None:  # fmt: skip
    """Probe every selected layer of frozen backbones on tasks; one record per cell.

    [bold]Examples[/bold]

      aimbench eval --backbone vit-tiny-cls --tasks digits

      aimbench eval -b vit-tiny-cls,vit-tiny-reg -t digits,fashion-mnist --limit 2000

      aimbench eval -b dinov2-vits14 -t fashion-mnist --layers 0,6,-1 --seed 0,1,2 --device cuda

      aimbench eval -b vit-tiny-cls -t digits --probe attentive,linear,knn --layers all,avg:3-5

      aimbench eval -b aim-600m -t imagenet-1k --probe official --layers last,best --device cuda

      aimbench eval -b dinov2-vits14 -t cifar10 --probe attentive,linear --protocol aimbench-fast

      aimbench eval -b aim-600m,aim-7b -t all --probe attentive,linear --dry-run

      aimbench eval -b aim-7b -t all --probe attentive --dry-run --assume-gpu h100

      aimbench eval -b aim-7b -t all --probe attentive --cluster slurm --gpus-per-node 1 --time 12:00:00 --dry-run

      aimbench eval -b aim-7b -t imagenet-1k --probe attentive --gpus 8 --device cuda

      torchrun --nproc-per-node 8 -m aimbench eval -b aim-7b -t imagenet-1k --probe attentive --device cuda

      aimbench eval -b aim-7b -t imagenet-1k --probe attentive --cluster slurm --nodes 2 --gpus-per-node 8
    """
    check_job_shape(nodes, tasks_per_node)
    rank, _ = launched_world()
    console = make_console()
    console.quiet = rank != 0  # under torchrun every rank runs this command; rank 0 speaks for the run (errors still come from each)
    display = RichDisplay(console)
    launcher = cluster.launcher(display, nodes=nodes, tasks_per_node=tasks_per_node)
    if launcher.local and (nodes != 1 or tasks_per_node is not None):
        raise UserError("--nodes and --tasks-per-node shape Slurm jobs (--cluster slurm); here, --gpus N runs each cell on N processes")
    ranks, nodes = launcher.cell_world(gpus, device)
    request = EvalRequest.from_options(
        backbone, tasks, probe, seed=seed, seeds=seeds, layers=layers, limit=limit, weights=weights, name=name, protocol=protocol,
        dtype=dtype, epochs=epochs, data_mode=data_mode, grid_search=grid_search, head_precision=head_precision, overwrite=overwrite,
        results=results, data_root=data_root, cards=cards, device=device, batch_size=batch_size, workers=workers, memory_gb=memory_gb,
        ranks=ranks, nodes=nodes,
    )  # fmt: skip
    run_request(request, cluster, console, Assumption.of(assume_gpu, assume_tflops, utilisation), launcher, display)
