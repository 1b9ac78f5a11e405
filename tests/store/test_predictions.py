"""Per-example predictions beside the record, and the intervals built from them when a cell finishes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load

from aimbench.cards.registry import Registry
from aimbench.data.images import LabelledImages
from aimbench.errors import UserError
from aimbench.identity import CellIdentity
from aimbench.probes.results import HeadScore, LayerResult, ProbeResult
from aimbench.stats import paired_bootstrap, score_interval
from aimbench.store.db import connect
from aimbench.store.predictions import Predictions, class_dtype, paired, read_predictions, sidecar_bytes
from aimbench.store.records import CellRun, DataUsed, read_record, record_path, write_cell_record, write_record_atomic

N, CLASSES = 300, 10  # the tiny cards' digits task


def _run(registry: Registry, backbone: str, ids: np.ndarray, labels: np.ndarray, rows: list[np.ndarray], keep: bool = True) -> CellRun:
    spec, task = registry.backbone(backbone), registry.task("digits")
    layers = [
        LayerResult(
            layer_set=f"block {i}",
            blocks=(i,),
            token="cls",
            hparams={"lr": 0.1},
            val_score=0.5,
            test_score=float((row == labels).mean()),
            test_predictions=row if keep else None,
        )  # fmt: skip
        for i, row in enumerate(rows)
    ]
    result = ProbeResult(heads=[HeadScore(layer.layer_set, "cls", {"lr": 0.1}, 0.5) for layer in layers], layers=layers,
                         best=layers[0], last=layers[-1])  # fmt: skip
    identity = CellIdentity(
        backbone=backbone, task="digits", probe="linear", seed=0, layers="all", limit=None, dtype="fp32", weights_key="",
        weights_name="", protocol="dinov2-linear", layers_in_key=False, config_hash=backbone[:6] * 2,
    )  # fmt: skip
    test = LabelledImages(lambda i: None, labels, ids)  # type: ignore[arg-type, return-value]  # images are never read here
    data = DataUsed("sklearn:digits", "1", task.split_policy(0.1), {"train": 10, "val": 2, "test": len(ids)})
    return CellRun(identity=identity, backbone=spec, weights_id="random", weights_sha256=None, features={}, task=task, data=data,
                   result=result, probe_config={"kind": "linear"}, environment={}, wall_time_s=1.0, test=test)  # fmt: skip


@pytest.fixture
def split() -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """A shuffled test split (ids not in order) and two layer sets' predictions, in that split's order."""
    rng = np.random.default_rng(0)
    ids, labels = rng.permutation(1000)[:N], rng.integers(0, CLASSES, N)
    rows = [np.where(rng.random(N) < accuracy, labels, rng.integers(0, CLASSES, N)) for accuracy in (0.6, 0.9)]
    return ids, labels, rows


def test_a_finished_cell_keeps_its_predictions_by_example_id_and_an_interval_per_score(tiny_cards: Path, tmp_path: Path, split) -> None:
    ids, labels, rows = split
    path = record_path(tmp_path, "a.json")
    record = write_cell_record(path, _run(Registry.load([tiny_cards]), "micro-cls", ids, labels, rows))
    assert read_record(path)["predictions"] == record["predictions"] and read_record(path)["layers"] == record["layers"]
    sidecar = path.with_name("a.predictions.safetensors")
    assert record["predictions"] == {"file": sidecar.name, "sha256": record["predictions"]["sha256"], "bytes": sidecar.stat().st_size}
    assert record["interval"] == {"method": "bootstrap-percentile", "level": 0.95, "resamples": 2000, "seed": 0} and record["n_test"] == N
    for entry, row in zip(record["layers"], rows):
        expected = score_interval(row, labels, "top1", CLASSES)
        assert entry["test_interval"] == {"low": expected.low, "high": expected.high}
        assert entry["test_interval"]["low"] < entry["test_score"] < entry["test_interval"]["high"]
    assert record["best_test_interval"] == record["layers"][0]["test_interval"]
    tensors = load(sidecar.read_bytes())
    assert {name: (t.dtype, t.shape) for name, t in tensors.items()} == {
        "example_ids": (np.int64, (N,)), "labels": (np.uint8, (N,)), "predictions": (np.uint8, (2, N)),
    }  # fmt: skip
    order = np.argsort(ids)
    assert (tensors["example_ids"] == ids[order]).all() and (tensors["predictions"][1] == rows[1][order]).all()
    kept = read_predictions(record, path)
    assert kept is not None and list(kept.by_layer_set) == ["block 0", "block 1"] and kept.best == "block 0"
    assert (kept.labels == labels[order]).all()


def test_classes_take_the_smallest_integer_type_and_imagenet_s_sidecar_is_3_1_mb() -> None:
    assert [class_dtype(c) for c in (2, 256, 257, 1000, 32768, 32769)] == [np.uint8] * 2 + [np.int16] * 3 + [np.int32]
    ids, labels = np.arange(50_000), np.arange(50_000) % 1000
    size = len(sidecar_bytes(ids, labels, [(f"block {i}", labels) for i in range(26)], 1000))
    assert 3.0e6 < size < 3.2e6  # 26 x 50k int16 predictions (2.6 MB) + int64 ids and int16 labels (0.5 MB)


def test_records_without_predictions_still_read_and_get_no_interval(tiny_cards: Path, tmp_path: Path, split) -> None:
    ids, labels, rows = split
    path = record_path(tmp_path, "b.json")
    record = write_cell_record(path, _run(Registry.load([tiny_cards]), "micro-cls", ids, labels, rows, keep=False))
    assert record["predictions"] is None and record["interval"] is None and record["layers"][0]["test_interval"] is None
    assert not path.with_name("b.predictions.safetensors").exists()
    assert read_predictions(record, path) is None and read_predictions({"schema_version": 4}, path) is None


def test_a_damaged_or_missing_sidecar_is_one_error_naming_it(tiny_cards: Path, tmp_path: Path, split) -> None:
    ids, labels, rows = split
    path = record_path(tmp_path, "c.json")
    record = write_cell_record(path, _run(Registry.load([tiny_cards]), "micro-cls", ids, labels, rows))
    sidecar = path.with_name("c.predictions.safetensors")
    data = bytearray(sidecar.read_bytes())
    data[-1] ^= 1  # one bit in the last prediction: the safetensors header still parses
    sidecar.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"c\.predictions\.safetensors failed their checksum"):
        read_predictions(record, path)
    sidecar.unlink()
    with pytest.raises(UserError, match=r"c\.predictions\.safetensors .* cannot be read"):
        read_predictions(record, path)


def test_two_backbones_pair_up_example_by_example_whatever_their_order(tiny_cards: Path, tmp_path: Path, split) -> None:
    ids, labels, rows = split
    registry = Registry.load([tiny_cards])
    shuffle = np.random.default_rng(1).permutation(N)  # B's split lists the same images in another order
    a = write_cell_record(record_path(tmp_path, "a.json"), _run(registry, "micro-cls", ids, labels, rows))
    b_run = _run(registry, "micro-cls", ids[shuffle], labels[shuffle], [row[shuffle] for row in rows[::-1]])
    b = write_cell_record(record_path(tmp_path, "b.json"), b_run)
    kept_a, kept_b = read_predictions(a, record_path(tmp_path, "a.json")), read_predictions(b, record_path(tmp_path, "b.json"))
    assert kept_a is not None and kept_b is not None
    pred_a, pred_b, paired_labels = paired(kept_a, kept_b)  # each side's best: A's 60 % set, B's 90 % one
    order = np.argsort(ids)
    assert (pred_a == rows[0][order]).all() and (pred_b == rows[1][order]).all() and (paired_labels == labels[order]).all()
    test = paired_bootstrap(pred_a, pred_b, paired_labels, "top1", CLASSES)
    assert test.difference == pytest.approx((rows[0] == labels).mean() - (rows[1] == labels).mean()) and test.p_value < 0.01
    other = Predictions(kept_b.example_ids + 1, kept_b.labels, kept_b.by_layer_set)
    with pytest.raises(UserError, match="different test examples"):
        paired(kept_a, other)


def test_layer_metrics_carry_the_interval_and_n_test_next_to_older_records(tiny_cards: Path, tmp_path: Path, split) -> None:
    """A results folder whose older records have no interval reads as before (null there); the
    Parquet cache of another column list is simply rebuilt."""
    ids, labels, rows = split
    registry = Registry.load([tiny_cards])
    old = write_cell_record(record_path(tmp_path, "old.json"), _run(registry, "micro-cls", ids, labels, rows, keep=False))
    old = {**old, "schema_version": 4}
    for key in ("interval", "predictions", "best_test_interval", "last_test_interval"):
        old.pop(key)
    old["layers"] = [{k: v for k, v in entry.items() if k != "test_interval"} for entry in old["layers"]]
    write_record_atomic(record_path(tmp_path, "old.json"), old)
    connect(tmp_path)  # the cache now holds the old record
    new = write_cell_record(record_path(tmp_path, "new.json"), _run(registry, "micro-patches", ids, labels, rows))
    got = connect(tmp_path).execute("SELECT backbone, layer_set, test_low, test_high, n_test FROM layer_metrics ORDER BY 1, 2").fetchall()
    assert got[:2] == [("micro-cls", "block 0", None, None, N), ("micro-cls", "block 1", None, None, N)]
    assert got[2:] == [("micro-patches", e["layer_set"], e["test_interval"]["low"], e["test_interval"]["high"], N) for e in new["layers"]]
    assert json.loads(record_path(tmp_path, "new.json").read_text())["schema_version"] == 5
