"""``aimbench pretrain``: thin dispatch over :mod:`aimbench.pretrain.trainer`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from aimbench.cards.registry import Registry
from aimbench.cli_options import make_console
from aimbench.cli_slurm import (
    PANEL,
    AccountOption,
    Cluster,
    ClusterOption,
    ConstraintOption,
    CpusOption,
    GpusOption,
    MemOption,
    PartitionOption,
    QosOption,
    SbatchOption,
    SlurmConfigOption,
    TimeOption,
    sbatch_pairs,
)  # fmt: skip
from aimbench.devices import parse_device, require_device
from aimbench.errors import at_least, positive
from aimbench.launch.preflight import writable_folder
from aimbench.pretrain.metrics_file import METRICS, read_metrics


def pretrain(
    preset: Annotated[str, typer.Argument(help="aim-600m | aim-1b | aim-3b | aim-7b | aim-tiny | aim-micro.")],
    data: Annotated[
        str,
        typer.Option(
            help="Image sources (folders, HF datasets on disk, .tar shards, hf:// or other URLs to stream), comma-separated, optionally weighted (README: Pre-training)."
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
    dtype: Annotated[str, typer.Option(help="bf16 (autocast on GPU) | fp32.")] = "bf16",
    image_size: Annotated[
        int, typer.Option(help="Training resolution \\[default: the preset's: 224, or 32 for aim-tiny].", show_default=False)
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
    cluster: ClusterOption = Cluster.local,
    nodes: Annotated[int, typer.Option(help="Slurm nodes.", rich_help_panel=PANEL)] = 1,
    tasks_per_node: Annotated[
        Optional[int],
        typer.Option(
            help="Slurm tasks (ranks) per node \\[default: --gpus-per-node, at least 1].", rich_help_panel=PANEL, show_default=False
        ),
    ] = None,
    slurm_config: SlurmConfigOption = None,
    partition: PartitionOption = None,
    account: AccountOption = None,
    qos: QosOption = None,
    time_limit: TimeOption = None,
    gpus_per_node: GpusOption = None,
    cpus_per_task: CpusOption = None,
    mem_gb: MemOption = None,
    constraint: ConstraintOption = None,
    sbatch: SbatchOption = None,
) -> None:
    """Pre-train an AIM from scratch (or --resume it); the trunk is exported for 'aimbench eval'.

    [bold]Examples[/bold]

      aimbench pretrain aim-tiny --data /data/imagenet/train --steps 2000 --batch-size 256 --out runs/tiny

      torchrun --nproc-per-node 8 -m aimbench pretrain aim-600m --data 'web/shards-{0000..0999}.tar@0.8,/data/imagenet/train@0.2'

      torchrun --nproc-per-node 8 -m aimbench pretrain aim-600m --data 'hf://datasets/OWNER/NAME=0.8,/data/imagenet/train=0.2'

      aimbench eval --backbone aim-tiny --weights runs/tiny --tasks smoke

      aimbench pretrain aim-7b --data ... --cluster slurm --nodes 8 --gpus-per-node 8 --time 2-00:00:00
    """
    for option, value, minimum in (("--steps", steps, 1), ("--batch-size", batch_size, 1), ("--image-size", image_size, 0),
                                   ("--save-every", save_every, 1), ("--workers", workers, 0), ("--nodes", nodes, 1),
                                   ("--tasks-per-node", tasks_per_node, 1)):  # fmt: skip
        if value is not None:
            at_least(option, value, minimum)
    if lr is not None:
        positive("--lr", lr)
    if cluster is Cluster.slurm:
        parse_device(device)  # the spelling only: a Slurm job's GPUs are the compute node's
    else:
        require_device(device)
    writable_folder(out, "--out")
    if resume:
        read_metrics(out / METRICS)  # damage fails now, not after the model is built; a torn last line is dropped
    from aimbench.pretrain.checkpoint import RunFiles  # imports torch: only once every argument has been checked
    from aimbench.pretrain.distributed import rank_device, world_from_env
    from aimbench.pretrain.parallel import choose
    from aimbench.pretrain.progress import watch
    from aimbench.pretrain.recipe import PretrainConfig
    from aimbench.pretrain.sources import parse_data
    from aimbench.pretrain.trainer import summary, train

    config = PretrainConfig.matching_card(preset, Registry.load(), steps=steps or 0, batch_size=batch_size, lr=lr, lr_scaling=lr_scaling,
                                          dtype=dtype, image_size=image_size, save_every=save_every, seed=seed)  # fmt: skip
    warning = config.lr_warning()
    if warning:
        typer.echo(warning, err=True)
    sources = parse_data(data)
    if cluster is Cluster.slurm:
        from aimbench.launch.pretrain_job import PretrainJob, submit_pretrain
        from aimbench.launch.slurm_settings import SlurmSettings

        RunFiles.of(out).require_new_or_resumed(resume)  # before the queue, not when the job starts
        settings = SlurmSettings.load(slurm_config, partition=partition, account=account, qos=qos, time=time_limit,
                                      gpus_per_node=gpus_per_node, cpus_per_task=cpus_per_task, mem_gb=mem_gb, constraint=constraint,
                                      sbatch=sbatch_pairs(sbatch))  # fmt: skip
        tasks = tasks_per_node or max(1, settings.gpus)
        job = PretrainJob(config, data, out, device, workers, parallel, activation_checkpointing)
        job_id, state_file = submit_pretrain(job, settings, nodes, tasks)
        make_console().print(f"submitted {preset} pre-training as Slurm job {job_id} ({nodes} node(s) x {tasks} task(s)); "
                             f"state: {state_file}; watch: aimbench jobs --results {out}", soft_wrap=True)  # fmt: skip
        return
    world = world_from_env()
    plan = choose(preset, world, parallel, activation_checkpointing)
    chosen = rank_device(device, world)
    console = make_console()
    if world.is_main:
        console.print(f"{preset}: {config.steps} steps of {batch_size} images at {config.image_size} px, peak lr {config.effective_lr:.3g}, "
                      f"{world.size} rank(s) ({plan.strategy}{', activation checkpointing' if plan.activation_checkpointing else ''}) on {chosen} -> {out}")  # fmt: skip
    with watch(console, config.steps, enabled=world.is_main) as show:
        history = train(config, sources, out, chosen, world, resume=resume, workers=workers, use_compile=compile, on_step=show,
                        plan=plan).history  # fmt: skip
    if world.is_main:
        files = RunFiles.of(out)
        facts = summary(history)
        loss = f"loss {facts['first_loss']:.4f} -> {facts['last_loss']:.4f}, " if facts else ""
        console.print(f"{loss}wrote {files.trunk} ({files.metrics.name}, {files.loss_curve.name} beside it); "
                      f"evaluate with: aimbench eval --backbone {preset} --weights {out}", soft_wrap=True)  # fmt: skip
