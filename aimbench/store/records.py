"""Run records: one JSON file per evaluated cell, the source of truth for every report.

The fields and their types are documented in ``aimbench.store.schema``. Files are named
``<cell key>__<config hash>.json`` under ``<results>/runs/``: re-running the same configuration
replaces its file, a changed configuration adds a new one, and the report takes the newest
record per cell key. Writes go to a hidden ``.<name>.<pid>.part`` file (which the ``*.json`` listing
never matches), are fsynced, then renamed into place, so a reader or an interrupted run never
sees half a record.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aimbench.atomic import atomic_write
from aimbench.store.schema import SCHEMA_VERSION

RUNS_DIR = "runs"


def runs_dir(results_dir: Path) -> Path:
    return results_dir / RUNS_DIR


def record_path(results_dir: Path, file_name: str) -> Path:
    return runs_dir(results_dir) / file_name


def new_record_header(cell_key: str, config_hash: str) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "record_id": uuid.uuid4().hex,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        "cell_key": cell_key,
        "config_hash": config_hash,
    }


def write_record_atomic(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` so that ``path`` either does not exist or holds the whole record."""
    text = json.dumps(record, indent=1, sort_keys=False) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def read_record(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)
