"""Progress of running jobs as ``aimbench jobs`` reads it: an eval cell's progress file, a pre-training run's metrics."""

from __future__ import annotations

import json
from pathlib import Path

from aimbench.launch.cell_progress import ProgressFile, progress_path, read_progress
from aimbench.launch.slurm.jobs import as_sacct_elapsed, job_rows, pretrain_progress
from aimbench.launch.slurm.submission import record_submission


def test_the_progress_file_follows_the_stages_and_is_throttled(tmp_path: Path) -> None:
    path = progress_path(tmp_path, "micro-cls__digits__linear__0__abc.json")
    assert path == tmp_path / "state" / "micro-cls__digits__linear__0__abc.progress.json"
    report = ProgressFile(path, interval=3600)
    advance = report("features train", 100)
    assert read_progress(path) == "features train 0/100 (0%)"  # a new stage is written at once
    advance(40)
    assert read_progress(path) == "features train 0/100 (0%)"  # within the interval: not rewritten
    advance(60)
    assert read_progress(path) == "features train 100/100 (100%)"  # the end of a stage always is
    ProgressFile(path, interval=0)("micro-cls · digits · linear heads", 8)(3)
    assert read_progress(path) == "linear heads 3/8 (37%)"  # the jobs table names backbone and task in its cell column
    assert not list(path.parent.glob(".*.part"))  # written atomically
    path.write_text("{half")
    assert read_progress(path) == "" and read_progress(tmp_path / "absent.json") == ""


def test_a_pretraining_run_reports_its_last_step_and_loss(tmp_path: Path) -> None:
    assert pretrain_progress(tmp_path) == ""
    (tmp_path / "config.json").write_text(json.dumps({"steps": 500}))
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / (s + 1)}) + "\n" for s in range(300)))
    assert pretrain_progress(tmp_path) == "step 300/500 loss 0.0033"
    with (tmp_path / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 300, "lo')  # the run is writing its next line
    assert pretrain_progress(tmp_path) == "step 300/500 loss 0.0033"


def test_job_rows_show_a_running_cells_progress_until_its_record_exists(tmp_path: Path) -> None:
    record = "micro-cls__digits__linear__0__abc.json"
    cell = {"key": "micro-cls|digits|linear|0", "record": record, "job_id": "999999_0", "stdout": "o", "stderr": "e"}
    record_submission(tmp_path, "20261130-070000", {"kind": "eval", "cells": [cell]})
    ProgressFile(progress_path(tmp_path, record), interval=0)("linear heads", 10)(4)
    [row] = job_rows(tmp_path)  # no such job in Slurm: its state is unknown, its progress is still read
    assert row.progress == "linear heads 4/10 (40%)" and not row.record
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / record).write_text("{}")
    assert job_rows(tmp_path)[0].progress == ""


def test_elapsed_times_read_the_same_from_squeue_and_sacct() -> None:
    assert [as_sacct_elapsed(t) for t in ("0:07", "12:34", "1:02:03", "2-03:04:05", "00:00:27")] == [
        "00:00:07",
        "00:12:34",
        "01:02:03",
        "2-03:04:05",
        "00:00:27",
    ]
