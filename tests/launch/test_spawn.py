"""One cell on many ranks here: ``--gpus N`` (N processes the local launcher starts) and torchrun, through the real CLI;
the flags' refusals; and the rank runner's failure handling (a failed rank stops the others, one line, no hang)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli

from aimbench.errors import UserError
from aimbench.launch.spawn import free_port, run_ranks

BASE = ("eval", "-b", "micro-cls", "-t", "digits", "--limit", "60", "--epochs", "2", "--protocol", "aim-v1")
CELL = (*BASE, "--device", "cpu")
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def _records(results: Path) -> list[Path]:
    return sorted((results / "runs").glob("*.json")) if (results / "runs").is_dir() else []


@pytest.mark.e2e  # three CLI runs, two of them spawning ranks: half a minute on a busy machine
@pytest.mark.timeout(240)
def test_two_cpu_ranks_run_one_cell_to_one_record(tmp_path: Path, tiny_cards: Path) -> None:
    results = tmp_path / "results"
    proc = run_cli(*CELL, "--gpus", "2", "--cards", str(tiny_cards), "--results", str(results), env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [record] = _records(results)
    assert "[1/1] micro-cls|digits|linear|0" in proc.stdout and "done" in proc.stdout
    two = json.loads(record.read_text())
    assert two["environment"]["world_size"] == 2
    single = tmp_path / "single"  # the same cell on one rank: the same numbers
    assert run_cli(*CELL, "--cards", str(tiny_cards), "--results", str(single)).returncode == 0
    one = json.loads(_records(single)[0].read_text())
    assert [(x["val_score"], x["test_score"]) for x in two["layers"]] == [(x["val_score"], x["test_score"]) for x in one["layers"]]
    again = run_cli(*CELL, "--gpus", "2", "--cards", str(tiny_cards), "--results", str(results))
    assert again.returncode == 0 and "skipped: record exists" in again.stdout


@pytest.mark.timeout(120)
def test_a_failing_rank_is_one_error_line_and_nothing_hangs(tmp_path: Path, tiny_cards: Path) -> None:
    corrupt = tmp_path / "broken.safetensors"  # read by the ranks only, when they load the backbone
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    results = tmp_path / "results"
    started = time.monotonic()
    proc = run_cli(*CELL, "--gpus", "2", "--weights", str(corrupt), "--cards", str(tiny_cards), "--results", str(results), env=ONE_THREAD)
    assert proc.returncode == 2, proc.stderr[-3000:]
    [line] = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: rank ") and " of 2 failed: " in line and "broken.safetensors" in line, proc.stderr[-3000:]
    assert proc.stderr.endswith(line + "\n")  # the last word is that one line
    assert not _records(results) and time.monotonic() - started < 100


def _wait_then_fail(stage: object) -> str:
    """Rank 1 fails at once; rank 0 waits in a collective for it (as a cell's ranks do), forever if nobody stops it."""
    import torch.distributed as dist

    from aimbench.distributed import init_process_group, world_from_env

    world = world_from_env()
    init_process_group(world, __import__("torch").device("cpu"))
    if world.rank == 1:
        raise UserError("no space left for rank 1's cache")
    dist.barrier()
    return "unreachable"


def _report_world(stage: object) -> str:
    from aimbench.distributed import world_from_env

    world = world_from_env()
    return f"{world.rank}/{world.size} at {os.environ['MASTER_ADDR']}"


@pytest.mark.timeout(60)
def test_the_first_failed_rank_stops_the_others_waiting_in_a_collective() -> None:
    started = time.monotonic()
    with pytest.raises(UserError, match=r"^rank 1 of 2 failed: no space left for rank 1's cache$"):
        run_ranks(_wait_then_fail, (), 2)
    assert time.monotonic() - started < 45


@pytest.mark.timeout(60)
def test_each_rank_gets_its_world_and_rank_zero_answers() -> None:
    assert run_ranks(_report_world, (), 2) == "0/2 at 127.0.0.1"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--gpus", "0"), "error: --gpus must be at least 1, got 0"),
        (("--gpus", "2", "--device", "cuda"), "error: --gpus 2, but 0 CUDA GPU(s) are visible here; --device cpu runs 2 CPU processes"),
        (("--gpus", "2", "--device", "cuda:1"), "error: --device cuda:1 names one GPU"),
        (("--gpus", "2", "--device", "cpu", "--layers", "last"), "error: this cell has 1 layer set(s) and each rank owns whole ones"),
        (("--nodes", "2"), "error: --nodes and --tasks-per-node shape Slurm jobs (--cluster slurm)"),
        (("--nodes", "0", "--cluster", "slurm"), "error: --nodes must be at least 1, got 0"),
        (("--gpus", "2", "--cluster", "slurm"), "error: --gpus N is for local runs; on Slurm give --nodes M and --gpus-per-node N"),
    ],
)
def test_bad_rank_options_are_one_error_line(extra: tuple[str, ...], message: str, tmp_path: Path, tiny_cards: Path) -> None:
    if "cuda" in " ".join(extra):
        from aimbench.devices import cuda_device_count

        if cuda_device_count() != 0:
            pytest.skip("this machine has a CUDA GPU")
    proc = run_cli(*BASE, "--cards", str(tiny_cards), "--results", str(tmp_path / "results"), *extra)
    assert proc.returncode == 2 and proc.stderr.startswith(message) and proc.stderr.count("\n") == 1, proc.stderr


def test_under_torchrun_gpus_must_match_the_given_world(tmp_path: Path, tiny_cards: Path) -> None:
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999"}
    proc = run_cli(*CELL, "--gpus", "4", "--cards", str(tiny_cards), "--results", str(tmp_path / "r"), env=env)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --gpus 4, but this process is one of 2 ranks torchrun"), proc.stderr
    slurm = run_cli(*CELL, "--cluster", "slurm", "--cards", str(tiny_cards), "--results", str(tmp_path / "r"), env=env)
    assert slurm.returncode == 2 and "submit to Slurm from a plain shell" in slurm.stderr, slurm.stderr


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_torchrun_runs_one_cell_on_two_ranks_and_rank_zero_alone_speaks(tmp_path: Path, tiny_cards: Path) -> None:
    results = tmp_path / "results"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()), "-m", "aimbench"]
    proc = subprocess.run([*torchrun, *CELL, "--cards", str(tiny_cards), "--results", str(results)], capture_output=True, text=True,
                          timeout=280, env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **ONE_THREAD})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("[1/1] micro-cls|digits|linear|0") == 1 and proc.stdout.count("1 cell(s)") == 1  # rank 0 only
    [record] = _records(results)
    assert json.loads(record.read_text())["environment"]["world_size"] == 2
