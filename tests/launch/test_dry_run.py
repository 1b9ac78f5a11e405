"""``aimbench eval --dry-run`` as a user types it, on a machine with none of the data and no weights:
the cost plan of every cell and the sweep's totals, here and for Slurm; nothing runs, nothing is submitted."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import run_cli

SWEEP = ("eval", "-b", "aim-600m,aim-7b", "-t", "all", "--probe", "attentive,linear", "--dry-run")
CELLS = 2 * 15 * 2  # backbones x the paper's 15 tasks x probes


def _dry_run(tmp_path: Path, *extra: str) -> str:
    results = tmp_path / "results"
    env = {"AIMBENCH_DATA_ROOT": str(tmp_path / "no-data"), "AIMBENCH_CACHE": str(tmp_path / "cache"), "XDG_CONFIG_HOME": str(tmp_path)}
    proc = run_cli(*SWEEP, "--results", str(results), *extra, env=env)
    assert proc.returncode == 0, proc.stderr
    assert not results.exists() and not (tmp_path / "cache").exists()  # no records, no jobs, no features
    rows = re.findall(r"^│ (aim-600m|aim-7b)\|([\w-]+)\|(attentive|linear)\|0 +│ +[\d,]+ │", proc.stdout, re.MULTILINE)  # cost rows
    assert len(set(rows)) == len(rows) == CELLS, proc.stdout
    assert re.search(r"^│ total +│ +10,723,464 │", proc.stdout, re.MULTILINE)  # train images of all cells, from the task cards
    assert f"total: {CELLS} cell(s), 12,446,940 images" in proc.stdout and "FLOP, est. " in proc.stdout
    assert re.search(
        r"aim-600m\|imagenet-1k\|attentive\|0 +│ +1,268,355 │ +12,812 │ +50,000 │ 126,898,312 │", proc.stdout
    )  # 100 epochs x train + val + test
    return proc.stdout


def test_a_dry_run_here_costs_the_sweep_without_the_data(tmp_path: Path) -> None:
    out = _dry_run(tmp_path)
    assert "dry run: nothing run" in out and "GFLOP/s" in out


def test_a_dry_run_for_slurm_adds_the_arrays_and_submits_nothing(tmp_path: Path) -> None:
    # planning reads the settings only: no cluster needs to answer, and none is asked
    out = _dry_run(tmp_path, "--cluster", "slurm")
    # cells asking for other memory (backbone and heads, in whole GB) go in other arrays; equal asks share one
    arrays = int(re.search(rf"{CELLS} cell\(s\) to submit in (\d+) array\(s\), 0 skipped", out).group(1))
    asks = re.findall(r"array \d+, resources per cell: .*mem_gb=(\d+)", out)
    assert 2 < arrays == len(asks) == len(set(asks)) < CELLS and "dry run: nothing submitted" in out


def test_a_plan_for_an_h100_prints_gpu_hours_and_splits_heads_that_do_not_fit(tmp_path: Path) -> None:
    env = {"AIMBENCH_DATA_ROOT": str(tmp_path / "no-data"), "XDG_CONFIG_HOME": str(tmp_path)}
    plan = ("eval", "-b", "aim-7b", "-t", "all", "--probe", "attentive", "--results", str(tmp_path / "results"))
    proc = run_cli(*plan, "--dry-run", "--assume-gpu", "h100", "--dtype", "bf16", env=env)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"est\. [\d.,]+ \w+ = [\d,]+ GPU-hours on an assumed device: the NVIDIA H100 SXM5 80GB's peak", proc.stdout)
    assert "at 40% utilisation" in proc.stdout and "x12 passes" in proc.stdout  # aim-v2: 26 layer sets x 14 heads beside a 17 GB backbone
    refused = run_cli(*plan, "--assume-gpu", "h100", env=env)  # not a dry run: nothing to assume
    assert refused.returncode == 2 and "give --dry-run too" in refused.stderr and refused.stderr.count("\n") == 1


def test_a_slurm_plan_says_which_cells_outlast_their_time_limit(tmp_path: Path) -> None:
    env = {"AIMBENCH_DATA_ROOT": str(tmp_path / "no-data"), "XDG_CONFIG_HOME": str(tmp_path)}
    proc = run_cli("eval", "-b", "aim-600m", "-t", "imagenet-1k", "--probe", "linear", "--cluster", "slurm", "--time", "1:00:00",
                   "--dry-run", "--assume-tflops", "100", "--results", str(tmp_path / "results"), env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"note: 1 cell\(s\) are estimated past their job's time limit \(longest: aim-600m\|imagenet-1k\|linear\|0, .* "
                     r"against --time 60 min, about \d+ requeues\)", proc.stdout)  # fmt: skip
