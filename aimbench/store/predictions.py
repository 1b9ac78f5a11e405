"""Per-example test predictions, kept beside each record so scores can get intervals and backbones paired comparisons.

A record holds aggregate scores only; whether backbone A is really better than B on a task, or
what a score's interval is over several seeds, needs what each selected head predicted for each
test example. That goes to ``<record stem>.predictions.safetensors`` next to the record (the
``*.json`` listing never matches it), written atomically before the record, which names it with
the SHA-256 of its bytes: ``"predictions": {"file", "sha256", "bytes"}``. Tensors:

``example_ids``  int64 (N,): the test images' dataset indices (``LabelledImages.indices``), sorted,
                 so two backbones' files on one task pair up example by example;
``labels``       (N,) the true classes, in that order;
``predictions``  (L, N) the selected head's class per example, one row per layer set in the
                 record's ``layers`` order.

Classes are stored in the smallest integer type that holds them (uint8 up to 256 classes, int16,
int32): ImageNet's 50,000 test images x 26 layer sets take 2.6 MB. The metadata names the layer
sets and the number of classes, and carries the checksum of the tensors (``aimbench.checksum``),
so a sidecar can be checked on its own as well as against its record.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load

from aimbench.atomic import atomic_write
from aimbench.checksum import CHECKSUM_KEY, content_sha256
from aimbench.errors import UserError

SUFFIX = ".predictions.safetensors"
FIELD = "predictions"  # the record field that names the sidecar


@dataclass(frozen=True)
class Predictions:
    """One record's per-example test predictions: ``by_layer_set[name]`` is (N,), aligned with ``example_ids`` and ``labels``;
    ``best`` is the record's val-selected layer set (what :func:`paired` compares unless told otherwise)."""

    example_ids: np.ndarray
    labels: np.ndarray
    by_layer_set: dict[str, np.ndarray]
    best: str | None = None


def sidecar_name(record_name: str) -> str:
    """``a__b.json`` -> ``a__b.predictions.safetensors``."""
    return f"{record_name.removesuffix('.json')}{SUFFIX}"


def class_dtype(num_classes: int) -> np.dtype:
    """The smallest integer type holding class indices 0 .. num_classes - 1."""
    for dtype in (np.uint8, np.int16, np.int32):
        if num_classes - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def sidecar_bytes(example_ids: np.ndarray, labels: np.ndarray, rows: Sequence[tuple[str, np.ndarray]], num_classes: int) -> bytes:
    """The sidecar's content: ``rows`` (layer set name, (N,) predictions in the order of ``example_ids``), sorted by example id."""
    import torch  # here, not at the top: reports read sidecars without it, and importing torch doubles a warm report's time

    from aimbench.safetensors_bytes import save_deterministic

    order = np.argsort(np.asarray(example_ids), kind="stable")
    dtype = class_dtype(max(num_classes, int(np.max([np.max(labels, initial=0), *(np.max(r, initial=0) for _, r in rows)])) + 1))
    tensors = {
        "example_ids": torch.from_numpy(np.asarray(example_ids, dtype=np.int64)[order].copy()),
        "labels": torch.from_numpy(np.asarray(labels)[order].astype(dtype)),
        "predictions": torch.from_numpy(np.stack([np.asarray(r)[order] for _, r in rows]).astype(dtype)),
    }
    metadata = {
        "layer_sets": json.dumps([name for name, _ in rows]),
        "num_classes": str(num_classes),
        CHECKSUM_KEY: content_sha256(tensors),
    }
    return save_deterministic(tensors, metadata)


@dataclass(frozen=True)
class Sidecar:
    """A record's predictions file, made but not yet written: the record names it (``field``) before
    it is written, so a folder that refuses it can have both kept elsewhere together."""

    path: Path
    data: bytes

    @property
    def field(self) -> dict[str, Any]:
        """The record's ``predictions`` field naming this file by its hash."""
        return {"file": self.path.name, "sha256": hashlib.sha256(self.data).hexdigest(), "bytes": len(self.data)}

    def write(self) -> None:
        atomic_write(self.path, lambda handle: handle.write(self.data))


def predictions_sidecar(record_file: Path, example_ids: np.ndarray, labels: np.ndarray, rows: Sequence[tuple[str, np.ndarray]],
                        num_classes: int) -> Sidecar:  # fmt: skip
    """The sidecar of ``record_file``: ``rows`` (layer set name, predictions in the order of ``example_ids``)."""
    return Sidecar(record_file.with_name(sidecar_name(record_file.name)), sidecar_bytes(example_ids, labels, rows, num_classes))


def read_predictions(record: dict[str, Any], record_file: Path) -> Predictions | None:
    """The predictions of ``record`` (read from ``record_file``), checked against the hash the record
    holds; None for a record written before they were kept. A missing or damaged sidecar is one error naming it."""
    field = record.get(FIELD)
    if not field:
        return None
    path = record_file.with_name(field["file"])
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"per-example predictions {path} of record {record_file.name} cannot be read ({exc.strerror or exc}); "
                        "re-run its cell with --overwrite") from None  # fmt: skip
    if hashlib.sha256(data).hexdigest() != field["sha256"]:
        raise UserError(f"per-example predictions {path} failed their checksum (changed after they were written); "
                        "re-run its cell with --overwrite")  # fmt: skip
    try:
        arrays = load(data)
    except SafetensorError as exc:  # the record's hash matched: a sidecar written by another tool under this name
        raise UserError(f"per-example predictions {path} cannot be read as safetensors ({exc}); re-run its cell with --overwrite") from None
    names = json.loads(_metadata(data)["layer_sets"])
    return Predictions(arrays["example_ids"], arrays["labels"].astype(np.int64), dict(zip(names, arrays["predictions"].astype(np.int64))),
                       record.get("best_layer_set"))  # fmt: skip


def _metadata(data: bytes) -> dict[str, str]:
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + length]).get("__metadata__", {})


def paired(a: Predictions, b: Predictions, layer_set_a: str | None = None, layer_set_b: str | None = None) -> tuple[np.ndarray, ...]:
    """``(pred_a, pred_b, labels)`` of two records on the same test examples, aligned by example id,
    ready for ``aimbench.stats.paired_bootstrap(*paired(a, b), metric, num_classes)``. Each side's
    layer set defaults to its record's best; two different test sets (another split, another
    ``--limit``) cannot be paired and are one error."""
    if a.example_ids.shape != b.example_ids.shape or not np.array_equal(np.sort(a.example_ids), np.sort(b.example_ids)):
        raise UserError(f"the two runs were scored on different test examples ({len(a.example_ids)} and {len(b.example_ids)}, "
                        "not the same images): they cannot be compared example by example")  # fmt: skip
    order_a, order_b = np.argsort(a.example_ids, kind="stable"), np.argsort(b.example_ids, kind="stable")
    if not np.array_equal(a.labels[order_a], b.labels[order_b]):
        raise UserError("the two runs give the same test examples different labels (another task version?): they cannot be paired")
    return _row(a, layer_set_a)[order_a], _row(b, layer_set_b)[order_b], a.labels[order_a]


def _row(predictions: Predictions, layer_set: str | None) -> np.ndarray:
    name = layer_set or predictions.best or next(iter(predictions.by_layer_set))
    if name not in predictions.by_layer_set:
        raise UserError(f"no per-example predictions for layer set '{name}'; there are {', '.join(predictions.by_layer_set)}")
    return predictions.by_layer_set[name]
