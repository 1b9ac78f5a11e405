"""Run records: one JSON file per evaluated cell, the source of truth for every report.

Schema (version 2). Scores are fractions in [0, 1] of the task's ``metric``; blocks are 0-indexed.

- identity: ``schema_version``, ``record_id`` (uuid4), ``created_at`` (UTC ISO-8601),
  ``cell_key`` ("backbone|task|probe|seed"), ``config_hash`` (hash of everything that defines
  the cell: cards' content, weights, layers, limit, probe config, seed), ``backbone``, ``task``,
  ``probe``, ``seed``.
- what was measured on: ``weights_id``, ``weights_sha256``, ``dtype`` (backbone precision), ``task_version``,
  ``dataset_source``, ``dataset_revision``, ``split_policy`` {train, val, test},
  ``n_train``/``n_val``/``n_test``, ``layers_spec``, ``image_limit`` (null = full splits),
  ``metric`` (top1 | mean_per_class | macro_f1).
- results: a layer set is a block or a window of blocks averaged (``aimbench.probes.layer_sets``).
  ``best_*`` (set chosen on val) and ``last_*`` (the set reaching deepest): ``layer_set`` (name),
  ``blocks``, ``layer`` (deepest block), ``token``, ``hparams``, ``val_score``, ``test_score``;
  ``layers``: per layer set the val-selected head {layer_set, blocks, layer, token, hparams
  ({lr, weight_decay} or {k}; null for released heads), val_score, test_score};
  ``heads``: every trained head {layer_set, token, hparams, val_score} (val only).
- how: ``probe_config`` (kind, grid, epochs, batch and the scaled learning rates, optimizer,
  schedule, normalisation, selection, ``feature_cache`` blocks read vs extracted),
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
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aimbench.atomic import atomic_write

SCHEMA_VERSION = 2
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
    text = json.dumps(record, indent=1, sort_keys=False) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def read_record(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)
