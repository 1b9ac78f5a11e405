"""Submission files: the shape the launcher writes is read, anything else is one error naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aimbench.errors import UserError
from aimbench.launch.slurm.jobs import submissions

CELL = {"key": "a|b|linear|0", "record": "a.json", "job_id": "1_0", "stdout": "o", "stderr": "e"}


def test_well_formed_eval_and_pretrain_submissions_are_read(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "1.json").write_text(json.dumps({"submission": "1", "cells": [CELL]}))
    (tmp_path / "jobs" / "2.json").write_text(json.dumps({"submission": "2", "kind": "pretrain", "out": "run", "job_id": "2",
                                                          "stdout": "o", "stderr": "e"}))  # fmt: skip
    assert [s["submission"] for s in submissions(tmp_path)] == ["1", "2"]


@pytest.mark.parametrize("content", [b"\xff\xfe", b"null", json.dumps({"submission": "1", "cells": [{**CELL, "job_id": 3}]}).encode()])
def test_anything_else_names_the_file(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "1.json").write_bytes(content)
    with pytest.raises(UserError, match=f"submission file {tmp_path / 'jobs' / '1.json'} .*delete it if it is not needed"):
        submissions(tmp_path)


def test_a_failed_multi_rank_cell_names_the_rank_that_raised_when_rank_zero_was_only_ended(tmp_path: Path) -> None:
    from aimbench.launch.base import JobRow
    from aimbench.launch.slurm.jobs import error_tail

    folder = tmp_path / "jobs" / "20261207-000000" / "85"
    folder.mkdir(parents=True)
    (folder / "85_0_log.err").write_text("srun: error: vm: task 1: Exited with exit code 1\nsrun: Terminating StepId=85.0\n")
    (folder / "85_1_log.err").write_text("Traceback (most recent call last):\n  ...\nRuntimeError: CUDA out of memory on rank 1\n")
    row = JobRow(submission="s", cell="c", job_id="85", state="FAILED", elapsed="", record=False, stdout=folder / "85_0_log.out",
                 stderr=folder / "85_0_log.err")  # fmt: skip
    assert error_tail(row) == "rank 1: RuntimeError: CUDA out of memory on rank 1"
    (folder / "85_0_log.err").write_text("ValueError: rank 0's own error\n")
    assert error_tail(row) == "ValueError: rank 0's own error"  # rank 0's exception comes first
