"""Rank, world, rendezvous and device from the launcher's environment (torchrun or Slurm)."""

from __future__ import annotations

import pytest
import torch

from aimbench.distributed import World, rank_device, world_from_env
from aimbench.errors import UserError

LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_JOB_ID",
                 "SLURM_JOB_NODELIST", "MASTER_ADDR", "MASTER_PORT")  # fmt: skip


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_no_launcher_is_a_world_of_one(clean_env: pytest.MonkeyPatch) -> None:
    assert world_from_env() == World()


def test_torchrun_variables_win(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("RANK", "5")
    clean_env.setenv("WORLD_SIZE", "8")
    clean_env.setenv("LOCAL_RANK", "1")
    clean_env.setenv("SLURM_NTASKS", "16")
    clean_env.setenv("SLURM_PROCID", "3")
    assert world_from_env() == World(5, 8, 1)


def test_slurm_tasks_get_a_rendezvous_port_per_job(clean_env: pytest.MonkeyPatch) -> None:
    import os

    for name, value in {"SLURM_NTASKS": "16", "SLURM_PROCID": "9", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "123456",
                        "SLURM_JOB_NODELIST": "gpu-node7"}.items():  # fmt: skip
        clean_env.setenv(name, value)
    assert world_from_env() == World(9, 16, 1)
    assert os.environ["MASTER_PORT"] == str(20000 + 123456 % 20000) and os.environ["MASTER_ADDR"]


def test_each_rank_takes_its_own_gpu_and_cpu_stays_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert rank_device("cpu", World(3, 4, 3)) == torch.device("cpu")
    assert rank_device("cuda", World(3, 8, 3)) == torch.device("cuda", 3)
    assert rank_device("cuda:0", World(1, 2, 1)) == torch.device("cuda", 1)  # under a launcher each rank has its GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert rank_device("cuda:2", World()) == torch.device("cuda", 2)


def test_a_single_process_is_refused_a_gpu_it_does_not_have(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(UserError, match=r"cuda:2 but this machine has 2 CUDA GPU\(s\)"):
        rank_device("cuda:2", World())
