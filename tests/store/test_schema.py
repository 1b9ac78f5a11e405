"""The record schema is documented once (aimbench/store/schema.py): every field a real record has
is a column there, and every column is a field some record of the current version has."""

from __future__ import annotations

import json
from pathlib import Path

from aimbench.cards.registry import Registry
from aimbench.identity import CellIdentity
from aimbench.launch.base import PlannedCell
from aimbench.launch.cells import plan_cells
from aimbench.launch.options import RunOptions
from aimbench.launch.run_cell import run_cell
from aimbench.probes.results import HeadScore, LayerResult, ProbeResult
from aimbench.store.records import CHECKSUM_FIELD, CellRun, DataUsed, build_record, record_text
from aimbench.store.schema import RECORD_COLUMNS


def test_records_of_every_probe_kind_have_exactly_the_schemas_columns(tmp_path: Path, tiny_cards: Path) -> None:
    registry = Registry.load([tiny_cards])
    cells = plan_cells(registry, ["micro-cls"], ["digits"], "linear,knn,attentive", limit=48, overrides={"epochs": 1}, protocol="aim-v1")
    options = RunOptions(results_dir=tmp_path / "results", card_dirs=(tiny_cards,), device="cpu", cache_dir=tmp_path / "cache")
    seen: set[str] = set()
    for cell in cells:
        planned = PlannedCell(cell=cell, identity=cell.identity(registry), skip=False)
        record = json.loads(run_cell(planned, options, registry=registry).read_text(encoding="utf-8"))
        assert set(record) <= set(RECORD_COLUMNS), sorted(set(record) - set(RECORD_COLUMNS))
        seen |= set(record)
    assert seen == set(RECORD_COLUMNS), sorted(set(RECORD_COLUMNS) - seen)


def test_the_record_built_from_typed_results_has_exactly_the_schemas_columns(tiny_cards: Path) -> None:
    """build_record is the one place a record's fields are written: checked here without running a probe."""
    registry = Registry.load([tiny_cards])
    spec, task = registry.backbone("micro-cls"), registry.task("digits")
    layer = LayerResult(
        layer_set="block 1",
        blocks=(1,),
        token="cls",
        hparams={"lr": 0.1, "weight_decay": 0.0},
        val_score=0.5,
        test_score=0.4,
        test_secondary={"top5": 0.9},
    )
    result = ProbeResult(heads=[HeadScore("block 1", "cls", {"lr": 0.1, "weight_decay": 0.0}, 0.5)], layers=[layer], best=layer, last=layer)
    identity = CellIdentity(
        backbone="micro-cls", task="digits", probe="linear", seed=0, layers="all", limit=None, dtype="fp32", weights_key="",
        weights_name="", protocol="dinov2-linear", layers_in_key=False, config_hash="f" * 12,
    )  # fmt: skip
    data = DataUsed("sklearn:digits", "1", task.split_policy(0.1), {"train": 10, "val": 2, "test": 5})
    run = CellRun(
        identity=identity, backbone=spec, weights_id="random", weights_sha256=None, features={}, task=task, data=data, result=result,
        probe_config={"kind": "linear"}, environment={}, wall_time_s=1.0,
    )  # fmt: skip
    record = build_record(run)
    assert record["cell_key"] == identity.key == "micro-cls|digits|linear|0" and record["config_hash"] == "f" * 12
    assert list(record) == [c for c in RECORD_COLUMNS if c != CHECKSUM_FIELD]
    assert (record["best_val_score"], record["n_val"], record["backbone_info"]["depth"]) == (0.5, 2, spec.depth)
    assert json.loads(record_text(record)).keys() == RECORD_COLUMNS.keys()
