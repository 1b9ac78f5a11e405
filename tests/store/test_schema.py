"""The record schema is documented once (aimbench/store/schema.py): every field a real record has
is a column there, and every column is a field some record of the current version has."""

from __future__ import annotations

import json
from pathlib import Path

from aimbench.cards.registry import Registry
from aimbench.launch.cells import plan_cells
from aimbench.launch.options import RunOptions
from aimbench.launch.run_cell import run_cell
from aimbench.store.schema import RECORD_COLUMNS


def test_records_of_every_probe_kind_have_exactly_the_schemas_columns(tmp_path: Path, tiny_cards: Path) -> None:
    registry = Registry.load([tiny_cards])
    cells = plan_cells(registry, ["micro-cls"], ["digits"], "linear,knn,attentive", limit=48, overrides={"epochs": 1})
    options = RunOptions(tmp_path / "results", card_dirs=(tiny_cards,), device="cpu", cache_dir=tmp_path / "cache")
    seen: set[str] = set()
    for cell in cells:
        record = json.loads(run_cell(cell, options).read_text(encoding="utf-8"))
        assert set(record) <= set(RECORD_COLUMNS), sorted(set(record) - set(RECORD_COLUMNS))
        seen |= set(record)
    assert seen == set(RECORD_COLUMNS), sorted(set(RECORD_COLUMNS) - seen)
