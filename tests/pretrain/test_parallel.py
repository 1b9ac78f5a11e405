"""DDP or FSDP by preset and world, activation checkpointing, and FSDP for real on two gloo processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from aimbench.adapters.weights import load_state_dict_file
from aimbench.distributed import World
from aimbench.errors import UserError
from aimbench.pretrain.objective import build_model
from aimbench.pretrain.parallel import Parallelism, choose
from aimbench.pretrain.recipe import PretrainConfig
from aimbench.pretrain.sources import parse_data
from aimbench.pretrain.trainer import train
from tests.pretrain.test_trainer import CPU, _free_port, config, images, losses  # noqa: F401 (images is a fixture)


@pytest.mark.parametrize(
    ("preset", "ranks", "asked", "expected"),
    [
        ("aim-tiny", 1, "auto", Parallelism("single", False)),
        ("aim-600m", 8, "auto", Parallelism("ddp", False)),
        ("aim-1b", 8, "auto", Parallelism("fsdp", True)),
        ("aim-7b", 16, "auto", Parallelism("fsdp", True)),
        ("aim-7b", 16, "ddp", Parallelism("ddp", True)),
        ("aim-600m", 8, "fsdp", Parallelism("fsdp", False)),
    ],
)
def test_auto_shards_and_recomputes_from_aim_1b_on(preset: str, ranks: int, asked: str, expected: Parallelism) -> None:
    assert choose(preset, World(0, ranks, 0), asked) == expected


def test_the_user_can_force_checkpointing_and_bad_choices_are_user_errors() -> None:
    assert choose("aim-tiny", World(), activation_checkpointing=True) == Parallelism("single", True)
    assert choose("aim-7b", World(0, 8, 0), activation_checkpointing=False).activation_checkpointing is False
    with pytest.raises(UserError, match="launch with torchrun or srun"):
        choose("aim-7b", World(), "fsdp")
    with pytest.raises(UserError, match="must be one of auto, ddp, fsdp"):
        choose("aim-7b", World(0, 8, 0), "zero3")


def test_activation_checkpointing_changes_memory_not_the_gradients() -> None:
    cfg = PretrainConfig("aim-micro", steps=1, batch_size=4)
    batch, prefix = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([1, 3, 7, 15])
    grads = []
    for recompute in (False, True):
        model = build_model(cfg)
        model.trunk.set_grad_checkpointing(recompute)
        model.head.set_grad_checkpointing(recompute)
        model(batch, prefix).backward()
        grads.append({name: p.grad for name, p in model.named_parameters()})
    for name, grad in grads[0].items():
        assert torch.equal(grad, grads[1][name]), name


def _rank(rank: int, port: int, image_dir: str, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    world, sources, out = World(rank, 2, rank), parse_data(image_dir), Path(tmp)
    cfg = config(steps=4, save_every=2, lr=3e-3)
    ddp = train(cfg, sources, out / "ddp", CPU, world, plan=Parallelism("ddp", False))
    fsdp = Parallelism("fsdp", True)
    first = train(cfg, sources, out / "fsdp", CPU, world, until=2, plan=fsdp)
    resumed = train(cfg, sources, out / "fsdp", CPU, world, resume=True, plan=fsdp)
    shard = next(resumed.model.parameters())
    torch.save({"ddp": [m.loss for m in ddp.history], "fsdp": [m.loss for m in first.history + resumed.history],
                "local_rows": shard.to_local().shape[0], "full_rows": shard.shape[0]}, f"{tmp}/rank{rank}.pt")  # fmt: skip


@pytest.mark.e2e
def test_fsdp_on_two_gloo_processes_shards_resumes_and_matches_ddp(images: Path, tmp_path: Path) -> None:  # noqa: F811
    torch.multiprocessing.spawn(_rank, args=(_free_port(), str(images), str(tmp_path)), nprocs=2, join=True)
    zero, one = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert zero["local_rows"] * 2 == zero["full_rows"] and one["local_rows"] * 2 == one["full_rows"]  # each rank holds half
    for rank in (zero, one):  # same data, same global batch: FSDP (resumed halfway) follows DDP up to float reassociation
        assert rank["fsdp"] == pytest.approx(rank["ddp"], rel=1e-4)
    assert losses(tmp_path / "fsdp") == pytest.approx(losses(tmp_path / "ddp"), rel=1e-4)
    trunks = [load_state_dict_file(tmp_path / run / "trunk.safetensors") for run in ("ddp", "fsdp")]
    assert trunks[0].keys() == trunks[1].keys()
    for name, tensor in trunks[0].items():  # the export gathers the shards into full tensors
        assert torch.allclose(tensor, trunks[1][name], atol=1e-5), name
    recorded = json.loads((tmp_path / "fsdp" / "config.json").read_text())["runtime"]
    assert recorded == {"world_size": 2, "strategy": "fsdp", "activation_checkpointing": True}
