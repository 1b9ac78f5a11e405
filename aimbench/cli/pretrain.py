"""``aimbench pretrain``: one PretrainRequest from the options, run here (or as a torchrun rank) or on Slurm by the chosen launcher."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from aimbench.cli.display import RichDisplay
from aimbench.cli.options import ClusterChoice, NodesOption, TasksPerNodeOption, check_job_shape, cluster_options, make_console
from aimbench.launch.base import Launched
from aimbench.models.presets import PRESETS
from aimbench.pretrain.request import PretrainRequest

PRESET_HELP = "An AIM preset: " + " | ".join(PRESETS) + "."


@cluster_options(leave_out=("array_parallelism", "dry_run"))
def pretrain(
    preset: Annotated[str, typer.Argument(help=PRESET_HELP)],
    data: Annotated[
        str,
        typer.Option(
            help="Image sources (folders, HF datasets on disk, .tar shards, hf:// or other URLs to stream), comma-separated, optionally weighted (docs/pretraining.md)."
        ),
    ],
    steps: Annotated[
        Optional[int],
        typer.Option(
            help="Optimizer steps; the schedule (2.5 % warmup from 1e-6, cosine to 0) spans them "
            "\\[default: the paper's: 500000 for aim-600m, 1200000 from aim-1b on; 10000 for the CPU presets].",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Global batch (all ranks together).")] = 4096,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate \\[default: 1e-3, per --lr-scaling].", show_default=False)] = None,
    lr_scaling: Annotated[
        str, typer.Option(help="none: the peak lr is 1e-3 at any batch (Apple's l3m, the paper) | linear: 1e-3 x batch / 4096.")
    ] = "none",
    out: Annotated[Path, typer.Option(help="Run directory: checkpoint, metrics, trunk.safetensors, loss.png.")] = Path("runs/pretrain"),
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    allow_data_change: Annotated[
        bool,
        typer.Option(
            help="With --resume: accept images that differ from the run's start (recorded in the run; the trunk then differs from an uninterrupted run's)."
        ),
    ] = False,
    dtype: Annotated[str, typer.Option(help="bf16 (autocast on GPU) | fp32.")] = "bf16",
    image_size: Annotated[
        int, typer.Option(help="Training resolution \\[default: the preset's: 224, 32 for aim-tiny, 16 for aim-micro].", show_default=False)
    ] = 0,
    save_every: Annotated[int, typer.Option(help="Checkpoint every N steps (and at the end).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seeds the initialisation, the data order, augmentation and prefixes.")] = 0,
    workers: Annotated[int, typer.Option(help="Data-loading processes per rank.")] = 4,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N] (under torchrun, each rank uses its LOCAL_RANK GPU).")] = "auto",
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    parallel: Annotated[str, typer.Option(help="Across ranks: auto (FSDP from aim-1b on, else DDP) | ddp | fsdp.")] = "auto",
    activation_checkpointing: Annotated[
        Optional[bool], typer.Option(help="Recompute block activations in the backward \\[default: on from aim-1b on].")
    ] = None,
    nodes: NodesOption = 1,
    tasks_per_node: TasksPerNodeOption = None,
    *,
    cluster: ClusterChoice,
) -> None:
    """Pre-train an AIM from scratch (or --resume it); the trunk is exported for 'aimbench eval'.

    [bold]Examples[/bold]

      aimbench pretrain aim-tiny --data /data/imagenet/train --steps 2000 --batch-size 256 --out runs/tiny

      torchrun --nproc-per-node 8 -m aimbench pretrain aim-600m --data 'web/shards-{0000..0999}.tar@0.8,/data/imagenet/train@0.2'

      torchrun --nproc-per-node 8 -m aimbench pretrain aim-600m --data 'hf://datasets/OWNER/NAME=0.8,/data/imagenet/train=0.2'

      aimbench eval --backbone aim-tiny --weights runs/tiny --tasks smoke --protocol aim-v1

      aimbench pretrain aim-7b --data ... --cluster slurm --nodes 8 --gpus-per-node 8 --time 2-00:00:00
    """
    check_job_shape(nodes, tasks_per_node)
    request = PretrainRequest(
        preset, data, steps=steps, batch_size=batch_size, lr=lr, lr_scaling=lr_scaling, out=out, resume=resume, allow_data_change=allow_data_change, dtype=dtype,
        image_size=image_size, save_every=save_every, seed=seed, workers=workers, device=device, compile=compile, parallel=parallel,
        activation_checkpointing=activation_checkpointing,
    )  # fmt: skip
    console = make_console()
    launcher = cluster.launcher(RichDisplay(console), nodes=nodes, tasks_per_node=tasks_per_node)
    warning = request.config().lr_warning()  # an unknown preset fails here, before anything is submitted or built
    if warning:
        typer.echo(warning, err=True)
    launched = launcher.pretrain(request)
    if not launcher.local:
        from aimbench.launch.slurm.launcher import SlurmLauncher  # imported already: cluster.launcher built one

        assert isinstance(launcher, SlurmLauncher)  # the only launcher that is not local
        console.print(f"submitted {preset} pre-training as Slurm job {launched.job_ids[0]} ({nodes} node(s) x {launcher.tasks_per_node} "
                      f"task(s)); state: {launched.state_file}; watch: aimbench jobs --results {out}", soft_wrap=True)  # fmt: skip
    elif launched.paths:  # the main rank (the others return nothing to say)
        _say_done(console, launched, preset, out)


def _say_done(console: Console, launched: Launched, preset: str, out: Path) -> None:
    facts = launched.summary
    loss = f"loss {facts['first_loss']:.4f} -> {facts['last_loss']:.4f}, " if facts else ""
    trunk, *beside = launched.paths
    console.print(f"{loss}wrote {trunk} ({', '.join(path.name for path in beside)} beside it); "
                  f"evaluate with: aimbench eval --backbone {preset} --weights {out}", soft_wrap=True)  # fmt: skip
