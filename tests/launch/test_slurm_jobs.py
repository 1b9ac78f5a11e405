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
