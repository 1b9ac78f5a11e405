"""The ``aimbench`` command line: a thin layer over the library.

User errors (``UserError``) print one ``error: ...`` line on stderr and exit with code 2;
Ctrl-C during an evaluation exits with 130 and never leaves a partial record.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import duckdb
import typer

from aimbench.cards.protocol_card import DATA_MODES, DEFAULT_PROTOCOL
from aimbench.cards.registry import Registry
from aimbench.cli_jobs import jobs
from aimbench.cli_options import CardsOption, ResultsOption, make_console
from aimbench.cli_pretrain import pretrain
from aimbench.cli_report import export, report
from aimbench.cli_slurm import (
    AccountOption,
    Cluster,
    ClusterOption,
    ConstraintOption,
    CpusOption,
    DryRunOption,
    GpusOption,
    MemOption,
    ParallelismOption,
    PartitionOption,
    QosOption,
    SbatchOption,
    SlurmConfigOption,
    TimeOption,
    run_on_slurm,
    sbatch_pairs,
)  # fmt: skip
from aimbench.cli_tasks import tasks_app
from aimbench.devices import require_device
from aimbench.dtypes import DTYPES
from aimbench.errors import UserError, at_least
from aimbench.launch.cells import plan_cells, weights_file
from aimbench.launch.options import RunOptions
from aimbench.launch.preflight import preflight_eval, writable_folder
from aimbench.probes.layer_sets import parse_blocks
from aimbench.report import layer_table, to_rich
from aimbench.report.listing import backbone_listing, protocol_listing, task_listing
from aimbench.store import read_record

app = typer.Typer(
    name="aimbench",
    help="Layer-wise frozen-backbone probing (the AIM paper's protocol), with results in DuckDB.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)
app.add_typer(tasks_app, name="tasks")
app.command("report")(report)
app.command("export")(export)
app.command("pretrain")(pretrain)
app.command("jobs")(jobs)
console = make_console()


class ListKind(str, Enum):
    backbones = "backbones"
    tasks = "tasks"
    protocols = "protocols"


def _split(values: str) -> list[str]:
    return [v.strip() for v in values.split(",") if v.strip()]


@app.command("ls")
def list_cards(
    kind: Annotated[ListKind, typer.Argument(help="What to list.")],
    pattern: Annotated[Optional[str], typer.Argument(help="Substring or glob filter on names.")] = None,
    data_root: Annotated[
        Optional[Path], typer.Option(envvar="AIMBENCH_DATA_ROOT", help="Where local dataset copies live (tasks: shows readiness).")
    ] = None,
    cards: CardsOption = None,
) -> None:
    """List known backbone variants, tasks or protocols (probe recipes).

    [bold]Examples[/bold]

      aimbench ls backbones

      aimbench ls backbones 'dinov2-*'

      aimbench ls tasks --cards ./my-cards

      aimbench ls protocols
    """
    registry = Registry.load(cards or ())
    if kind is ListKind.backbones:
        table = backbone_listing(registry, pattern)
    elif kind is ListKind.protocols:
        table = protocol_listing(registry, pattern)
    else:
        from aimbench.data import default_data_root

        table = task_listing(registry, pattern, data_root or default_data_root())
    console.print(to_rich(table))


def _evaluate(
    backbones: list[str], tasks: list[str], probe: str, seeds: list[int], layers: Optional[str], limit: Optional[int],
    weights: Optional[str], overrides: dict[str, object], options: RunOptions, overwrite: bool, dtype: str = "fp32",
    protocol: str = DEFAULT_PROTOCOL, name: Optional[str] = None,
) -> None:  # fmt: skip
    registry = Registry.load(options.card_dirs)
    from aimbench.data import require_ready  # before any weights are hashed or loaded: missing data fails in a second

    require_ready(registry.expand_tasks(tasks), options.data_root)
    cells = plan_cells(registry, backbones, tasks, probe, seeds, layers, limit, weights, overrides, dtype, protocol, name)
    preflight_eval(cells, registry, options, overwrite, local=True)
    console.print(f"[bold]{len(cells)} cell(s)[/bold] → {options.results_dir / 'runs'}")
    finished = 0
    try:
        from aimbench.launch.local import run_local  # imports torch: only when evaluating

        for outcome in run_local(cells, options, overwrite, console):
            finished += 1
            status = "skipped: record exists (use --overwrite to re-run)" if outcome.skipped else "done"
            console.print(f"[{finished}/{len(cells)}] {outcome.cell.key} {status}")
            console.print(to_rich(layer_table(read_record(outcome.record))))
    except KeyboardInterrupt:
        unfinished = cells[min(finished, len(cells) - 1)].key
        print(
            f"interrupted: no record written for {unfinished}; finished cells are kept, and a linear or "
            "attentive probe resumes from its last checkpoint when the same command runs again",
            file=sys.stderr,
        )
        raise typer.Exit(130) from None


@app.command("eval")
def evaluate(
    backbone: Annotated[str, typer.Option("--backbone", "-b", help="Backbone variant(s), comma-separated.")],
    tasks: Annotated[
        str,
        typer.Option("--tasks", "-t", help="Task(s), suite(s) (all = the AIM paper's 15) or tag:NAME (e.g. tag:medical), comma-separated."),
    ],
    probe: Annotated[
        str,
        typer.Option(help="linear | knn | attentive (comma-separated; trained and selected here) | official (released heads, e.g. AIM's)."),
    ] = "linear",
    layers: Annotated[
        Optional[str],
        typer.Option(
            help="all | last | best | avg:A-B windows | block indices like 0,5,-1, comma-separated; for --probe official: head names (last, best). Default: every block plus the card's published windows (AIM: all,last,best).",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[Optional[int], typer.Option(help="Cap images per split (smoke runs; recorded).")] = None,
    seed: Annotated[str, typer.Option(help="Seed(s), comma-separated; each is its own cell.")] = "0",
    seeds: Annotated[
        Optional[int], typer.Option(help="Repeat each cell with seeds 0..N-1 (reports show mean ± std).", show_default=False)
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option(help="Backbone precision: fp32 | bf16 | fp16 (recorded; part of the cell).")] = "fp32",
    results: ResultsOption = Path("results"),
    data_root: Annotated[Optional[Path], typer.Option(envvar="AIMBENCH_DATA_ROOT", help="Where local dataset copies live.")] = None,
    weights: Annotated[
        Optional[str], typer.Option(help="Override the card's weights: random | timm | open_clip:TAG | PATH | hf:OWNER/REPO/FILE.")
    ] = None,
    name: Annotated[
        Optional[str],
        typer.Option(
            "--name",
            "--tag",
            help="What reports call the --weights override (default: the run folder's or file's name).",
            show_default=False,
        ),
    ] = None,
    protocol: Annotated[
        str,
        typer.Option(
            help="The probe recipe: a protocol card (aimbench ls protocols); tasks and the options below may override its fields."
        ),
    ] = DEFAULT_PROTOCOL,
    epochs: Annotated[
        Optional[int], typer.Option(help="Training epochs of linear and attentive probes (default: the protocol's).", show_default=False)
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per backbone forward.")] = 64,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 0,
    data_mode: Annotated[
        Optional[str],
        typer.Option(
            help="online (augmented views through the backbone each step) | cached (eval-crop features extracted once), for linear and attentive probes; default: the protocol's; kNN is always cached.",
            show_default=False,
        ),
    ] = None,
    memory_gb: Annotated[
        Optional[float], typer.Option(help="Device memory for attentive heads, GiB (default: 90% of free GPU memory).", show_default=False)
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", "--rerun", help="Re-run cells whose record already exists.")] = False,
    cards: CardsOption = None,
    cluster: ClusterOption = Cluster.local,
    slurm_config: SlurmConfigOption = None,
    partition: PartitionOption = None,
    account: AccountOption = None,
    qos: QosOption = None,
    time_limit: TimeOption = None,
    gpus_per_node: GpusOption = None,
    cpus_per_task: CpusOption = None,
    mem_gb: MemOption = None,
    constraint: ConstraintOption = None,
    array_parallelism: ParallelismOption = None,
    sbatch: SbatchOption = None,
    dry_run: DryRunOption = False,
) -> None:
    """Probe every selected layer of frozen backbones on tasks; one record per cell.

    [bold]Examples[/bold]

      aimbench eval --backbone vit-tiny-cls --tasks digits

      aimbench eval -b vit-tiny-cls,vit-tiny-reg -t digits,fashion-mnist --limit 2000

      aimbench eval -b dinov2-vits14 -t fashion-mnist --layers 0,6,-1 --seed 0,1,2 --device cuda

      aimbench eval -b vit-tiny-cls -t digits --probe attentive,linear,knn --layers all,avg:3-5

      aimbench eval -b aim-600m -t imagenet-1k --probe official --layers last,best --device cuda

      aimbench eval -b dinov2-vits14 -t cifar10 --probe attentive,linear --protocol aimbench-fast

      aimbench eval -b aim-7b -t all --probe attentive --cluster slurm --gpus-per-node 1 --time 12:00:00 --dry-run
    """
    try:
        seed_list = [int(s) for s in _split(seed)]
    except ValueError:
        raise UserError(f"bad --seed '{seed}': use integers like 0 or 0,1,2") from None
    if layers is not None and not layers.strip():
        raise UserError("--layers names no layer set; leave it out for the card's default")
    if seeds is not None:
        if seeds < 1 or seed != "0":
            raise UserError("--seeds N takes a positive count and replaces --seed; give one or the other")
        seed_list = list(range(seeds))
    options = RunOptions(results, data_root, tuple(cards or ()), device, batch_size, workers, memory_gb=memory_gb)
    if epochs is not None and epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {epochs}")
    if data_mode is not None and data_mode not in DATA_MODES:
        raise UserError(f"unknown data mode '{data_mode}'; one of {', '.join(DATA_MODES)}")
    overrides = {**({} if epochs is None else {"epochs": epochs}), **({} if data_mode is None else {"data_mode": data_mode})}
    if cluster is Cluster.slurm:
        from aimbench.launch.slurm_settings import SlurmSettings

        settings = SlurmSettings.load(slurm_config, partition=partition, account=account, qos=qos, time=time_limit,
                                      gpus_per_node=gpus_per_node, cpus_per_task=cpus_per_task, mem_gb=mem_gb, constraint=constraint,
                                      array_parallelism=array_parallelism, sbatch=sbatch_pairs(sbatch))  # fmt: skip
        registry = Registry.load(options.card_dirs)
        from aimbench.data import require_ready  # missing data fails here, not in every job of the array

        require_ready(registry.expand_tasks(_split(tasks)), options.data_root)
        cells = plan_cells(
            registry, _split(backbone), _split(tasks), probe, seed_list, layers, limit, weights, overrides, dtype, protocol, name
        )
        preflight_eval(cells, registry, options, overwrite, local=False)
        run_on_slurm(cells, options, settings, overwrite, dry_run, console)
        return
    if dry_run:
        raise UserError("--dry-run plans a Slurm submission; add --cluster slurm")
    _evaluate(
        _split(backbone), _split(tasks), probe, seed_list, layers, limit, weights, overrides, options, overwrite, dtype, protocol, name
    )


@app.command("features")
def features(
    backbone: Annotated[str, typer.Argument(help="Backbone variant.")],
    inputs: Annotated[list[Path], typer.Option("--input", "-i", help="Image folder, .txt list of paths, or image (repeatable).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The .safetensors file to write.")],
    layers: Annotated[str, typer.Option(help="all | last | block indices like 0,5,-1.")] = "all",
    weights: Annotated[
        Optional[str], typer.Option(help="Override the card's weights: random | timm | open_clip:TAG | PATH | hf:OWNER/REPO/FILE.")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward.")] = 32,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option(help="Backbone precision: fp32 | bf16 | fp16.")] = "fp32",
    cards: CardsOption = None,
) -> None:
    """Write per-layer patch and prefix tokens of a backbone for images, with its own preprocessing.

    [bold]Examples[/bold]

      aimbench features aim-600m -i photos/ --layers 12,23 -o aim600m.safetensors

      aimbench features dinov2-vits14 -i list.txt --layers all -o dino.safetensors --weights ./dinov2_vits14.pth
    """
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}'; one of {', '.join(DTYPES)}")
    if output.suffix != ".safetensors":
        raise UserError(f"--output must end in .safetensors, got '{output}'")
    if output.is_dir():
        raise UserError(f"--output {output} is a folder; name the .safetensors file to write")
    at_least("--batch-size", batch_size, 1)
    registry = Registry.load(cards or ())
    spec = registry.backbone(backbone)
    chosen = parse_blocks(layers, spec.depth)
    weights_file(weights)
    writable_folder(output.parent, "--output", output)
    require_device(device)
    from aimbench.adapters import load_backbone  # imports torch: only once every argument has been checked
    from aimbench.adapters.export import export_features, list_images
    from aimbench.provenance import resolve_device

    images = list_images(inputs)
    model = load_backbone(backbone, weights=weights, registry=registry, dtype=dtype).to(resolve_device(device))
    export_features(model, images, chosen, output, batch_size)
    console.print(f"wrote {output}: {len(images)} images x {len(chosen)} layers of {backbone} ({model.weights.id})")


@app.command("demo")
def demo(
    results: ResultsOption = Path("results"),
    overwrite: Annotated[bool, typer.Option(help="Pre-train and evaluate again, replacing the demo's run and records.")] = False,
    pretrain_steps: Annotated[int, typer.Option(help="Pre-training steps of the tiny AIM (64 images each).")] = 240,
) -> None:
    """Pre-train a tiny AIM on scikit-learn's digits, probe it layer by layer beside random-init backbones, report; offline.

    The trained trunk becomes the backbone 'aim-tiny-demo' (a card under RESULTS/demo/cards); its
    random-init twin is 'aim-tiny'. A second run reuses everything and only reports.
    """
    from aimbench import demo as demo_run

    cards = demo_run.pretrain_demo_aim(results, console, overwrite, pretrain_steps)
    options = RunOptions(results_dir=results, device="cpu", card_dirs=(cards,))
    _evaluate(list(demo_run.BACKBONES), [demo_run.TASK], "linear", [0], None, None, None, {}, options, overwrite)
    report(results=results, backbone=",".join(demo_run.BACKBONES), task=demo_run.TASK)


def main() -> None:
    """Console-script entry point: one clean line for user errors, tracebacks only for bugs."""
    try:
        app()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except duckdb.Error as exc:  # e.g. a record file edited by hand into invalid JSON
        print(f"error: cannot read the run records: {str(exc).splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
