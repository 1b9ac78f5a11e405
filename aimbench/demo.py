"""``aimbench demo``: the whole loop, offline on one CPU in a few minutes.

Pre-train the tiny AIM on the digits task's train images (labels unused; the test images are never
seen), register the trained trunk as a backbone card ``aim-tiny-demo`` (the way a user adds their
own pre-trained model: a TOML card whose ``weights`` is a path), then probe it layer by layer beside
the same network at random init (``aim-tiny``) and two tiny random ViTs. The CLI runs the probes
and prints the report; this module owns the pre-training half and where the demo keeps its files.

Everything lives under ``RESULTS/demo/``; a second run reuses the trained trunk and the finished
records, so it only prints the report again (``--overwrite`` redoes everything).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import torch
from rich.console import Console

from aimbench.atomic import atomic_write
from aimbench.cards.registry import Registry
from aimbench.data import load_task
from aimbench.errors import UserError
from aimbench.pretrain.checkpoint import RunFiles
from aimbench.pretrain.progress import watch
from aimbench.pretrain.recipe import PretrainConfig
from aimbench.pretrain.shards import write_tar_shard
from aimbench.pretrain.sources import parse_data
from aimbench.pretrain.trainer import train

TASK = "digits"
RANDOM_BACKBONES = ("vit-tiny-cls", "vit-tiny-reg", "aim-tiny")
PRETRAINED = "aim-tiny-demo"
# The probe recipe: aim-v1's linear heads train on cached features, one backbone pass; the default
# linear recipe (DINOv2's, 12,500 steps of 1,024 augmented views) would take hours on a CPU.
PROTOCOL = "aim-v1"
BACKBONES = (*RANDOM_BACKBONES, PRETRAINED)
# ~1.5 CPU-minutes here; the official peak lr 1e-3, unscaled (linear scaling would make it 1.6e-5 at a batch of 64).
PRETRAIN_STEPS, PRETRAIN_BATCH, PRETRAIN_LR = 240, 64, 1e-3

CARD = """\
# Written by 'aimbench demo': the tiny AIM pre-trained on the digits train images ({steps} steps of {batch_size}).
family = "aim"
adapter = "aim"
license = "Apache-2.0"
description = "aim-tiny pre-trained by aimbench demo."

[preprocess]  # aim-tiny's, which pre-training normalised with too
{preprocess}

[variants.{name}]
description = "aim-tiny after {steps} AIM pre-training steps on the digits train images (labels unused)."
arch = "aim-tiny"
weights = {weights}
depth = 6
dim = 128
heads = 2
cls_token = false
"""


def demo_dir(results: Path) -> Path:
    return results / "demo"


def card_dir(results: Path) -> Path:
    """The card root (holding ``backbones/``) that names the pre-trained trunk ``aim-tiny-demo``."""
    return demo_dir(results) / "cards"


def pretrain_demo_aim(results: Path, console: Console, overwrite: bool = False, steps: int = PRETRAIN_STEPS) -> Path:
    """Pre-train aim-tiny on the digits train images unless a finished run is there; returns the card root.

    A finished run of another length is an error rather than silently reused: its probe records
    would describe the other run."""
    root = demo_dir(results)
    run = RunFiles.of(root / "pretrain")
    if overwrite:
        shutil.rmtree(root, ignore_errors=True)
    registry = Registry.load()
    config = PretrainConfig.matching_card("aim-tiny", registry, steps=steps, batch_size=PRETRAIN_BATCH, lr=PRETRAIN_LR, save_every=steps)
    if run.trunk.is_file():
        done = json.loads(run.config.read_text(encoding="utf-8"))["steps"]
        if done != steps:
            raise UserError(f"{root} holds a demo pre-trained for {done} steps, not {steps}; pass --overwrite to start over")
    else:
        train_split = load_task(registry.task(TASK)).train
        shard = root / "digits-train.tar"
        count = write_tar_shard((train_split.image(i) for i in range(len(train_split))), shard)
        console.print(f"pre-training aim-tiny on {count} digits train images: {config.steps} steps of {config.batch_size}, "
                      f"peak lr {config.effective_lr:g} -> {run.root}")  # fmt: skip
        shutil.rmtree(run.root, ignore_errors=True)  # an interrupted earlier attempt: start it over, it is short
        with watch(console, config.steps) as show:
            outcome = train(config, parse_data(str(shard)), run.root, torch.device("cpu"), workers=0, on_step=show)
        console.print(f"loss {outcome.history[0].loss:.3f} -> {outcome.history[-1].loss:.3f}; loss curve: {run.loss_curve}")
    write_card(results, config, registry)
    return card_dir(results)


def _toml_value(value: object) -> str:
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(map(_toml_value, value)) + "]"
    return json.dumps(value)  # strings and numbers are spelled the same in TOML


def write_card(results: Path, config: PretrainConfig, registry: Registry) -> None:
    fields = asdict(registry.backbone(config.preset).preprocess)
    preprocess = "\n".join(f"{key} = {_toml_value(value)}" for key, value in fields.items())
    trunk = (demo_dir(results) / "pretrain" / "trunk.safetensors").resolve()  # absolute: a card's relative paths stay in its root
    text = CARD.format(
        name=PRETRAINED, steps=config.steps, batch_size=config.batch_size, preprocess=preprocess, weights=_toml_value(str(trunk))
    )
    atomic_write(card_dir(results) / "backbones" / "demo.toml", lambda handle: handle.write(text.encode("utf-8")))
