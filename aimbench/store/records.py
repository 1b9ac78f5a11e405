"""Run records: one JSON file per evaluated cell, the source of truth for every report.

Schema (version 1). Accuracies are fractions in [0, 1]; layers are 0-indexed blocks.

- identity: ``schema_version``, ``record_id`` (uuid4), ``created_at`` (UTC ISO-8601),
  ``cell_key`` ("backbone|task|probe|seed"), ``config_hash`` (hash of everything that defines
  the cell: cards' content, weights, layers, limit, probe config, seed), ``backbone``, ``task``,
  ``probe``, ``seed``.
- what was measured on: ``weights_id``, ``weights_sha256``, ``dtype`` (backbone precision), ``task_version``,
  ``dataset_source``, ``dataset_revision``, ``split_policy`` {train, val, test},
  ``n_train``/``n_val``/``n_test``, ``layers_spec``, ``image_limit`` (null = full splits).
- results: ``best_layer``/``best_token``/``best_lr``/``best_val_top1``/``best_test_top1`` (best
  layer chosen on val), ``last_layer``/``last_val_top1``/``last_test_top1``; ``layers``: per
  layer the val-selected head {layer, token, lr, weight_decay, val_top1, test_top1};
  ``heads``: every trained head {layer, token, lr, weight_decay, val_top1} (val only).
- how: ``probe_config`` (grid, epochs, batch, optimizer, schedule, normalisation, selection),
  ``backbone_info`` (family, adapter, arch, depth, dim, heads, card, licence, preprocess,
  ``features`` {source, norm_applied, prefix_layout}), ``task_info`` (num_classes, metric, card),
  ``environment`` (aimbench version, git sha, torch, python, device), ``wall_time_s``.

Files are named ``<cell key>__<config hash>.json`` under ``<results>/runs/``: re-running the
same configuration replaces its file, a changed configuration adds a new one, and the report
takes the newest record per cell key. Writes go to a hidden ``.<name>.part`` file (which the
``*.json`` read pattern never matches), are fsynced, then renamed into place, so a reader or an
interrupted run never sees half a record.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
RUNS_DIR = "runs"
RECORD_GLOB = "*.json"


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
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.part")
    try:
        with temporary.open("w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=1, sort_keys=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def read_record(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)
