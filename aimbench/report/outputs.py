"""Per-example outputs (prediction sidecars) as reports read them: only where scores are not enough.

The stored intervals answer every question about one cell; the sidecars are read only to
combine seeds (``aimbench.report.seed_intervals``) and to pair two backbones example by example
(``aimbench.report.pairs``). Whether a record has one is asked of DuckDB first (``predictions``,
NULL for records written before), so a report over records without sidecars opens no file for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aimbench.store.records import read_record

Outputs = tuple[dict[str, Any], Any]  # a record and its aimbench.store.predictions.Predictions


def load_outputs(path: Path) -> Outputs | None:
    """A record and its per-example outputs, or None where it has none (written before they were kept)."""
    record = read_record(path)
    if not record.get("predictions"):
        return None
    from aimbench.store.predictions import read_predictions  # numpy arrays from the sidecar file

    predictions = read_predictions(record, path)
    return None if predictions is None else (record, predictions)
