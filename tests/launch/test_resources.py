"""Resources per eval cell: the backbone card's memory hint (or the size estimate) picks what the user left unset."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import run_cli

from aimbench.cards.registry import Registry
from aimbench.errors import UserError
from aimbench.launch.memory import memory_need
from aimbench.launch.slurm.resources import HOST_RUNTIME_GB, cell_parameters
from aimbench.launch.slurm.settings import SlurmSettings


def test_the_need_is_the_cards_hint_else_an_estimate_from_depth_and_width(tiny_cards: Path) -> None:
    registry = Registry.load([tiny_cards])
    hinted = memory_need(registry.backbone("micro-patches"), "fp32")
    assert (hinted.gb, hinted.source, hinted.describe()) == (0.5, "card", "0.5 GB fp32 (card)")
    aim_7b = registry.backbone("aim-7b")
    assert (memory_need(aim_7b, "bf16").gb, memory_need(aim_7b, "fp32").gb) == (17, 32)
    estimated = memory_need(replace(aim_7b, memory_gb={}), "bf16")  # 12 * 32 * 4096^2 = 6.44e9 parameters in 2 bytes
    assert estimated.source == "estimate" and estimated.gb == pytest.approx(6.44e9 * 2 / 1e9 * 1.2 + 1, abs=0.1)


def test_cpu_cells_ask_for_the_need_plus_the_runtime_unless_memory_is_set(tiny_cards: Path) -> None:
    spec = Registry.load([tiny_cards]).backbone("micro-patches")
    parameters = cell_parameters(SlurmSettings(), memory_need(spec, "fp32"), spec.name)
    assert parameters["gpus_per_node"] == 0 and parameters["mem_gb"] == math.ceil(0.5 + HOST_RUNTIME_GB)
    parameters = cell_parameters(SlurmSettings(mem_gb=64.0), memory_need(spec, "fp32"), spec.name)
    assert parameters["mem_gb"] == 64.0


def test_gpu_kinds_that_fit_become_the_constraint_and_none_fitting_is_refused() -> None:
    aim_7b, aim_600m = (Registry.load().backbone(name) for name in ("aim-7b", "aim-600m"))
    kinds = SlurmSettings(gpu_types={"v100-16g": 16, "a100-40g": 40, "h100-80g": 80})
    assert kinds.gpus == 1  # declaring GPU memory implies a GPU per cell
    assert cell_parameters(kinds, memory_need(aim_600m, "bf16"), aim_600m.name)["slurm_constraint"] == "a100-40g|h100-80g|v100-16g"
    assert cell_parameters(kinds, memory_need(aim_7b, "fp32"), aim_7b.name)["slurm_constraint"] == "a100-40g|h100-80g"
    assert "mem_gb" not in cell_parameters(kinds, memory_need(aim_7b, "fp32"), aim_7b.name)  # host memory stays the partition's
    mine = replace(kinds, constraint="h100-80g")  # the user's own constraint is never replaced
    assert cell_parameters(mine, memory_need(aim_600m, "bf16"), aim_600m.name)["slurm_constraint"] == "h100-80g"
    with pytest.raises(UserError, match=r"aim-7b needs 32 GB fp32 \(card\) of GPU memory; the largest of gpu_types has 16 GB"):
        cell_parameters(SlurmSettings(gpu_types={"v100-16g": 16}), memory_need(aim_7b, "fp32"), aim_7b.name)


def test_a_partition_whose_gpus_are_too_small_refuses_the_cell_before_submitting() -> None:
    aim_7b = Registry.load().backbone("aim-7b")
    small = SlurmSettings(gpu_memory_gb=24)
    with pytest.raises(UserError, match=r"aim-7b needs 32 GB fp32 \(card\) of GPU memory; the partition's GPUs have 24 GB"):
        cell_parameters(small, memory_need(aim_7b, "fp32"), aim_7b.name)
    need = memory_need(aim_7b, "bf16")
    parameters = cell_parameters(small, need, aim_7b.name)
    assert parameters["gpus_per_node"] == 1 and need.gb == 17
    assert (
        cell_parameters(replace(small, gpus_per_node=0), memory_need(aim_7b, "fp32"), aim_7b.name)["gpus_per_node"] == 0
    )  # CPU by choice: not refused


def test_the_plan_puts_cells_of_different_needs_in_separate_arrays_and_refuses_what_cannot_fit(tmp_path: Path, tiny_cards: Path) -> None:
    plan = ("eval", "-b", "micro-cls,micro-patches", "-t", "digits", "--cluster", "slurm", "--dry-run", "--cards", str(tiny_cards),
            "--results", str(tmp_path / "results"))  # fmt: skip
    proc = run_cli(*plan, "--slurm-config", str(tmp_path / "none.toml"), env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert proc.returncode == 2 and "--slurm-config" in proc.stderr and "does not exist" in proc.stderr
    proc = run_cli(*plan, env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert "2 cell(s) to submit in 2 array(s), 0 skipped" in proc.stdout
    # the backbone's need and the heads' (a linear grid on 10 classes: under 0.1 GB, rounded up to it)
    assert "1.1 GB fp32 (estimate) + 0.1 GB heads" in proc.stdout and "0.5 GB fp32 (card) + 0.1 GB heads" in proc.stdout
    assert f"mem_gb={math.ceil(1.2 + HOST_RUNTIME_GB)}" in proc.stdout and f"mem_gb={math.ceil(0.6 + HOST_RUNTIME_GB)}" in proc.stdout
    config = tmp_path / "slurm.toml"
    config.write_text("gpu_memory_gb = 0.8\n")  # the estimate of micro-cls does not fit
    refused = run_cli(*plan, "--slurm-config", str(config))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "micro-cls needs 1.1 GB fp32 (estimate) + 0.1 GB heads of GPU memory; the partition's GPUs have 0.8 GB" in refused.stderr
    assert not (tmp_path / "results").exists()


def test_a_cell_on_several_ranks_is_one_job_of_that_many_tasks_that_ends_whole_when_one_fails(tiny_cards: Path) -> None:
    spec = Registry.load([tiny_cards]).backbone("micro-patches")
    one = cell_parameters(SlurmSettings(), memory_need(spec, "fp32"), spec.name)
    assert (one["nodes"], one["tasks_per_node"]) == (1, 1) and "srun_args" not in one
    gpus = cell_parameters(SlurmSettings(gpus_per_node=8), memory_need(spec, "fp32"), spec.name, nodes=2, tasks_per_node=8)
    assert (gpus["nodes"], gpus["tasks_per_node"], gpus["gpus_per_node"]) == (2, 8, 8)
    assert gpus["srun_args"] == ["--kill-on-bad-exit=1"]  # a dead rank must not leave the others waiting in a collective
    cpu = cell_parameters(SlurmSettings(), memory_need(spec, "fp32"), spec.name, tasks_per_node=2)
    assert cpu["mem_gb"] == math.ceil((0.5 + HOST_RUNTIME_GB) * 2)  # per node: each task holds its own backbone
