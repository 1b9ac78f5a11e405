"""Plain progress lines for output that is not a terminal (Slurm logs, pipes): one formatter, a
per-stage throttle, every stage's end; a Slurm cell's progress file prints them to the job's log."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from aimbench.cli.display import RichDisplay
from aimbench.errors import UserError
from aimbench.launch import cell_progress
from aimbench.launch.cell_progress import PlainProgress, ProgressFile, progress_line, progress_path, progress_seconds, read_progress


class Clock:
    """A ``time.monotonic`` that moves only when told: no test here depends on the wall clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_line_names_the_cell_the_stage_how_far_and_how_long() -> None:
    assert progress_line("micro-cls · digits · features train", 120, 300, 3.14) == "[micro-cls · digits] features train 120/300 (40%) 3.1 s"
    assert progress_line("linear heads", 0, 0, 0) == "linear heads 0/0 (0%) 0.0 s"


def test_lines_come_at_most_every_interval_per_stage_and_at_each_end(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, lines = Clock(), []
    monkeypatch.setattr(cell_progress.time, "monotonic", clock)
    stage = PlainProgress(lines.append, interval=30)
    advance = stage("m · t · features train", 100)
    for _ in range(4):  # 10 images every 10 s: a line when 30 s have passed since the last one
        clock.now += 10
        advance(10)
    other = stage("m · t · features val", 5)
    clock.now += 1
    other(5)  # the end of a stage always shows
    advance(60)
    assert lines == [
        "[m · t] features train 30/100 (30%) 30.0 s",
        "[m · t] features val 5/5 (100%) 1.0 s",
        "[m · t] features train 100/100 (100%) 41.0 s",
    ]
    every = PlainProgress(lines.append, interval=0)("epochs", 3)
    every(1)
    every(1)
    assert lines[-2:] == ["epochs 1/3 (33%) 0.0 s", "epochs 2/3 (66%) 0.0 s"]  # interval 0: every update


def test_the_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIMBENCH_PROGRESS_SECONDS", raising=False)
    assert progress_seconds() == 30
    monkeypatch.setenv("AIMBENCH_PROGRESS_SECONDS", "0")
    assert progress_seconds() == 0 and PlainProgress().interval == 0
    monkeypatch.setenv("AIMBENCH_PROGRESS_SECONDS", "soon")
    with pytest.raises(UserError, match="AIMBENCH_PROGRESS_SECONDS is 'soon'"):
        progress_seconds()


def test_a_slurm_cells_progress_file_also_prints_plain_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = progress_path(tmp_path, "micro-cls__digits__linear__0__abc.json")
    advance = ProgressFile(path, interval=0, echo=PlainProgress(interval=0))("micro-cls · digits · features train (cached)", 48)
    advance(48)
    assert read_progress(path) == "features train (cached) 48/48 (100%)"
    assert capsys.readouterr().out.startswith("[micro-cls · digits] features train (cached) 48/48 (100%) ")
    ProgressFile(path, interval=0)("linear heads", 2)(1)  # without echo: the file only
    assert capsys.readouterr().out == "" and json.loads(path.read_text())["done"] == 1


def test_a_display_that_is_not_a_terminal_prints_lines_instead_of_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIMBENCH_PROGRESS_SECONDS", "0")
    monkeypatch.setattr(cell_progress.time, "monotonic", Clock())
    out = io.StringIO()
    display = RichDisplay(Console(file=out, width=200))  # a StringIO is no terminal
    with display.cell(object()) as stage:  # type: ignore[arg-type]
        advance = stage("micro-cls · digits · features [train]", 2)  # brackets are text, never markup
        advance(1)
        advance(1)
    assert out.getvalue().splitlines() == [
        "[micro-cls · digits] features [train] 1/2 (50%) 0.0 s",
        "[micro-cls · digits] features [train] 2/2 (100%) 0.0 s",
    ]
    assert display.running is None
