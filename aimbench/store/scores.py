"""Which scores a record may hold: every metric aimbench computes (``METRICS``) is a share of the
split in [0, 1], so a score outside it, NaN or inf is no measurement.

The store refuses to write a record holding one, and a record file holding one (written by
another tool, or edited by hand) is left out of reports with a warning, as a damaged record is.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

LOW, HIGH = 0.0, 1.0  # top1, mean_per_class and macro_f1 alike


def _in_range(value: Any) -> bool:
    return value is None or (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and LOW <= value <= HIGH
    )


def bad_scores(record: dict[str, Any]) -> list[str]:
    """The fields of ``record`` whose score is not a finite number in [0, 1] (``layers[2].test_score``), in record order."""
    found = [key for key in record if key.endswith(("_val_score", "_test_score")) and not _in_range(record[key])]
    for list_name in ("layers", "heads"):
        for i, entry in enumerate(record.get(list_name) or []):
            if not isinstance(entry, dict):
                continue
            scores = {key: entry.get(key) for key in ("val_score", "test_score")}
            scores.update({f"test_secondary.{k}": v for k, v in (entry.get("test_secondary") or {}).items()})
            found += [f"{list_name}[{i}].{key}" for key, value in scores.items() if not _in_range(value)]
    return found


def bad_score_warning(path: Path, fields: list[str]) -> str:
    return f"warning: run record {path} holds a score outside [0, 1] or not a number ({', '.join(fields[:3])}); left out"
