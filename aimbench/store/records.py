"""Run records: one JSON file per evaluated cell, the source of truth for every report.

The fields and their types are documented in ``aimbench.store.schema``. Files are named
``<cell key>__<config hash>.json`` under ``<results>/runs/``: re-running the same configuration
replaces its file, a changed configuration adds a new one, and the report takes the newest
record per cell key. Writes go to a hidden ``.<name>.<pid>.part`` file (which the ``*.json`` listing
never matches), are fsynced, then renamed into place, so a reader or an interrupted run never
sees half a record.

From schema version 4 a record ends with ``record_sha256``, the SHA-256 of its text without that
last field: a record changed after it was written (a disk error, a hand edit) is never counted.
The report leaves it out with a warning, and ``eval`` runs its cell again. It is checked on the
text, without parsing the JSON, so reading 100k records stays cheap. Older records have none and
are read as they are.

From schema version 5 a cell's record is written by :func:`write_cell_record`: first the
per-example test predictions of every layer set (``aimbench.store.predictions``, a sidecar file the
record names with its hash), then the record, whose layer sets carry a 95 % bootstrap interval on
their test score (``test_interval``; how: ``interval``; ``aimbench.stats.intervals``). Records of
older versions have neither, and reports show their intervals as unavailable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aimbench.atomic import NotWritable, atomic_write, rescue
from aimbench.errors import UserError
from aimbench.stats.intervals import LEVEL, METHOD, RESAMPLES, SEED, layer_intervals
from aimbench.store.predictions import FIELD, predictions_sidecar
from aimbench.store.schema import SCHEMA_VERSION
from aimbench.store.scores import bad_scores

if TYPE_CHECKING:
    from aimbench.cards.backbone_card import BackboneSpec
    from aimbench.cards.task_card import TaskSpec
    from aimbench.data.images import LabelledImages
    from aimbench.identity import CellIdentity
    from aimbench.probes.results import ProbeResult

RUNS_DIR = "runs"
CHECKSUM_FIELD = "record_sha256"
_SEAL = re.compile(r',\n "record_sha256": "([0-9a-f]{64})"\n\}\n?$')
_VERSION = re.compile(r'^\{\s*"schema_version": (\d+)')
FIRST_SEALED_VERSION = 4


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


@dataclass(frozen=True)
class DataUsed:
    """The dataset a cell read: where from, which revision, how it was split, and the split sizes."""

    source: str
    revision: str
    split_policy: dict[str, Any]
    sizes: dict[str, int]  # train, val, test


@dataclass(frozen=True, kw_only=True)
class CellRun:
    """What evaluating one cell produced, typed; :func:`build_record` turns it into the record
    (``aimbench.store.schema`` documents every field)."""

    identity: CellIdentity
    backbone: BackboneSpec
    weights_id: str
    weights_sha256: str | None
    features: dict[str, Any]  # how tokens were taken from the network (FeatureProvenance.as_dict())
    task: TaskSpec
    data: DataUsed
    result: ProbeResult
    probe_config: dict[str, Any]
    environment: dict[str, Any]
    wall_time_s: float
    timing: dict[str, Any] | None = None  # where the time went (probes.run.Timing.as_record)
    test: LabelledImages | None = None  # the test split: its example ids and labels, for the predictions sidecar and the intervals


def build_record(run: CellRun) -> dict[str, Any]:
    """The record of ``run``: the header, the cell, what was read, the selected heads per layer set, and the provenance."""
    cell, spec, task = run.identity, run.backbone, run.task
    result, interval = _with_intervals(run)
    return {
        **new_record_header(cell.key, cell.config_hash),
        "backbone": cell.backbone,
        "task": cell.task,
        "probe": cell.probe,
        "protocol": cell.protocol,
        "seed": cell.seed,
        "weights_key": cell.weights_key,
        "weights_name": cell.weights_name,
        "weights_id": run.weights_id,
        "weights_sha256": run.weights_sha256,
        "dtype": cell.dtype,
        "task_version": task.version,
        "dataset_source": run.data.source,
        "dataset_revision": run.data.revision,
        "split_policy": run.data.split_policy,
        **{f"n_{name}": size for name, size in run.data.sizes.items()},
        "layers_spec": cell.layers,
        "image_limit": cell.limit,
        "metric": task.metric,
        "secondary_metrics": list(task.secondary_metrics),
        **{f"{which}_{key}": value for which in ("best", "last") for key, value in getattr(result, which).as_record().items()},
        "layers": [layer.as_record() for layer in result.layers],
        "interval": interval,
        FIELD: None,  # the sidecar, named by write_cell_record once it is written
        "heads": [dataclasses.asdict(head) for head in result.heads],
        "probe_config": run.probe_config,
        "backbone_info": {
            "family": spec.family,
            "adapter": spec.adapter,
            "arch": spec.arch,
            "depth": spec.depth,
            "windows": {name: list(blocks) for name, blocks in spec.windows.items()},  # what paper numbers were measured on
            "dim": spec.dim,
            "heads": spec.heads,
            "card": str(spec.card_path),
            "license": spec.license,
            "preprocess": spec.preprocess.as_dict(),
            "features": run.features,
        },
        "task_info": {"num_classes": task.num_classes, "metric": task.metric, "card": str(task.card_path)},
        "environment": run.environment,
        "timing": run.timing,
        "wall_time_s": round(run.wall_time_s, 3),
    }


def _kept_predictions(run: CellRun) -> list[tuple[str, np.ndarray]] | None:
    """(layer set, test predictions) of every layer set in record order; None unless all have them, for a test split of their length."""
    rows = [(layer.layer_set, layer.test_predictions) for layer in run.result.layers if layer.test_predictions is not None]
    if run.test is None or len(rows) < len(run.result.layers):
        return None
    if all(len(row) == len(run.test) for _, row in rows):
        return rows
    print(f"warning: the test predictions of {run.identity.key} do not cover its {len(run.test)} test images; "
          "its record keeps no per-example predictions and no intervals", file=sys.stderr, flush=True)  # fmt: skip
    return None


def _with_intervals(run: CellRun) -> tuple[ProbeResult, dict[str, Any] | None]:
    """The run's result with a 95 % interval on every layer set's test score (all on the same
    bootstrap resamples), and the record's ``interval`` field saying how; unchanged, and None,
    where the predictions were not kept."""
    rows = _kept_predictions(run)
    if rows is None or run.test is None or not len(run.test):
        return run.result, None
    found = layer_intervals(np.stack([row for _, row in rows]), run.test.labels, run.task.metric, run.task.num_classes)
    by_name = {layer.layer_set: dataclasses.replace(layer, test_interval=(i.low, i.high)) for layer, i in zip(run.result.layers, found)}
    result = dataclasses.replace(run.result, layers=list(by_name.values()), best=by_name[run.result.best.layer_set],
                                 last=by_name[run.result.last.layer_set])  # fmt: skip
    return result, {"method": METHOD, "level": LEVEL, "resamples": RESAMPLES, "seed": SEED}


def write_cell_record(path: Path, run: CellRun) -> dict[str, Any]:
    """Write the record of ``run`` at ``path`` and return it: first its per-example predictions
    beside it (where the probe kept them), then the record naming them by hash, so a record never
    points at a sidecar that is not complete. A record that would be refused writes neither."""
    record = build_record(run)
    rows = _kept_predictions(run) if record["interval"] is not None else None  # kept, for every layer set (build_record said so)
    if rows is not None and run.test is not None and not bad_scores(record):
        sidecar = predictions_sidecar(path, run.test.indices, run.test.labels, rows, run.task.num_classes)
        record[FIELD] = sidecar.field
        try:
            sidecar.write()
        except NotWritable as refused:  # the folder refuses the cell's files: both are kept elsewhere, and the error says where
            kept_with = NotWritable(path, str(refused))  # the record first, its sidecar beside it
            raise rescue(kept_with, record_text(record).encode("utf-8"), {sidecar.path.name: sidecar.data}) from None
    write_record_atomic(path, record)
    return record


def record_text(record: dict[str, Any]) -> str:
    """The file content of ``record``: its JSON with ``record_sha256`` of that JSON appended as the last field."""
    body = json.dumps({k: v for k, v in record.items() if k != CHECKSUM_FIELD}, indent=1, sort_keys=False)
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    return f'{body.removesuffix("}").rstrip()},\n "{CHECKSUM_FIELD}": "{digest}"\n}}\n'


def record_intact(text: str) -> bool:
    """True when ``text`` is a record as written: its checksum matches, or it predates checksums (version < 4)."""
    sealed = _SEAL.search(text)
    if sealed is None:
        version = _VERSION.match(text)
        return version is not None and int(version.group(1)) < FIRST_SEALED_VERSION
    body = text[: sealed.start()] + "\n}"
    return hashlib.sha256(body.encode("utf-8")).hexdigest() == sealed.group(1)


def damaged_record_warning(path: Path) -> str:
    return f"warning: run record {path} failed its checksum (changed after it was written); left out, and its cell runs again"


def finished(path: Path) -> bool:
    """Whether ``path`` holds an intact record (its cell is done); a damaged one says so and counts as not done."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    except (OSError, UnicodeDecodeError):
        text = ""
    if record_intact(text):
        return True
    print(damaged_record_warning(path), file=sys.stderr, flush=True)
    return False


def write_record_atomic(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` so that ``path`` either does not exist or holds the whole record, sealed by its checksum;
    a score that is no measurement (:func:`bad_scores`) is refused, so nothing is written.

    A record is a finished cell (minutes to hours of work): where its folder refuses the write,
    the record is kept elsewhere and the error names the place, instead of being thrown away."""
    bad = bad_scores(record)
    if bad:
        raise UserError(f"refusing to record {path.name}: {', '.join(bad[:3])} is not a score in [0, 1]; nothing was recorded")
    data = record_text(record).encode("utf-8")
    try:
        atomic_write(path, lambda handle: handle.write(data))
    except NotWritable as refused:
        raise rescue(refused, data) from None


def record_file_text(path: Path) -> str:
    """The text of a record file; bytes that are not UTF-8 (a copy through another encoding, a disk error) are one error."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"run record {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); delete it, or re-run its cell") from None


def read_record(path: Path) -> dict[str, Any]:
    """A record that is intact (:func:`record_intact`), without its checksum; anything else is one error naming the file."""
    text = record_file_text(path)
    if not record_intact(text):
        raise UserError(f"run record {path} failed its checksum (changed after it was written); re-run its cell with --overwrite")
    record = json.loads(text)
    record.pop(CHECKSUM_FIELD, None)
    return record
