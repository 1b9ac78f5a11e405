"""eval whose output is not a terminal (a Slurm log, a pipe) prints plain progress lines, says
"(cached)" for splits the feature cache already holds, and report cell says where the time went."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import run_cli


def test_piped_eval_prints_plain_progress_and_report_cell_the_time(tmp_path: Path, tiny_cards: Path) -> None:
    results = tmp_path / "results"
    env = {"AIMBENCH_PROGRESS_SECONDS": "0", "AIMBENCH_CACHE": str(tmp_path / "cache")}
    args = ("eval", "-b", "micro-cls", "-t", "digits", "--probe", "linear,attentive", "--data-mode", "cached", "--limit", "48",
            "--epochs", "1", "--protocol", "aim-v1", "--cards", str(tiny_cards), "--results", str(results), "--overwrite")  # fmt: skip
    first = run_cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    for stage in ("features train", "features val", "features test", "token maps train", "token maps val", "token maps test"):
        assert any(re.fullmatch(rf"\[micro-cls · digits\] {stage} 48/48 \(100%\) \d+\.\d s", line) for line in lines), (stage, lines)
    assert any(re.fullmatch(r"\[micro-cls · digits\] linear heads 1/1 \(100%\) \d+\.\d s", line) for line in lines), lines
    assert "(cached)" not in first.stdout and "━" not in first.stdout.split("[1/2]")[0]  # no bars before the first table

    second = run_cli(*args, env=env)  # the same cache: every split is read back, nothing extracted
    assert second.returncode == 0, second.stderr
    for stage in ("features train", "features val", "features test", "token maps train", "token maps val", "token maps test"):
        assert f"[micro-cls · digits] {stage} (cached) 48/48 (100%)" in second.stdout, (stage, second.stdout)

    report = run_cli("report", "cell", "micro-cls|digits|attentive", "--results", str(results), "--cards", str(tiny_cards))
    assert report.returncode == 0, report.stderr
    assert re.search(r"load \d+\.\d s · extraction \d+\.\d s \(cached\) · heads \d+\.\d s · evaluation \d+\.\d s · total \d+\.\d s on \w+",
                     report.stdout), report.stdout  # fmt: skip
