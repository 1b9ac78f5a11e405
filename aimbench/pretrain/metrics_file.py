"""Reading a pre-training run's ``metrics.jsonl``, where a kill may have torn the last line.

The trainer appends one JSON line per step. A process killed during that append (preemption,
Ctrl-C, a full disk) leaves a partial last line, and that must not stop ``--resume``: the torn
line is the step the checkpoint does not cover anyway, so readers drop it and the resumed run
rewrites the file without it. A line that does not parse *before* the last one is not a torn
append but damage, and is reported in one line naming the file and the line.

Kept free of torch so the CLI can check a run folder before it imports anything heavy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aimbench.errors import UserError

METRICS = "metrics.jsonl"


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        row = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return row if isinstance(row, dict) else None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every complete row of ``path`` (none when it does not exist), without a torn last line."""
    if not path.is_file():
        return []
    lines = [(number, line) for number, line in enumerate(path.read_bytes().split(b"\n"), start=1) if line.strip()]
    rows = []
    for number, line in lines:
        row = _parse(line)
        if row is not None:
            rows.append(row)
        elif number < lines[-1][0]:
            raise UserError(f"{path}: line {number} is not a JSON object (the file is damaged, not just cut short); "
                            "repair or delete that line, or delete the file to keep no history before the checkpoint")  # fmt: skip
    return rows


def metrics_text(rows: list[dict[str, Any]]) -> str:
    """Rows as the trainer writes them: one JSON object per line, each ending in a newline."""
    return "".join(json.dumps(row) + "\n" for row in rows)
