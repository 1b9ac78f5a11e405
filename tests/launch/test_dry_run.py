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
    assert f"{CELLS} cell(s) to submit in 2 array(s), 0 skipped" in out  # aim-600m and aim-7b ask for different memory
    assert "array 2, resources per cell:" in out and "dry run: nothing submitted" in out
