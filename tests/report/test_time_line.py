"""``report cell`` shows where a cell's time went and on which device; records written before
``timing`` was kept (null in ``runs``) report as they did."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aimbench.report.cell_detail import timing_line
from aimbench.report.views import cell_view
from aimbench.store import connect
from tests.report.test_cell_detail import full_record
from tests.store.test_db import save


def timing(**changes: Any) -> dict[str, Any]:
    splits = {"train": {"s": 20.0, "images": 240}, "val": {"s": 2.5, "images": 30}, "test": {"s": 2.8, "images": 30}}
    return {
        "load_s": 2.1, "extraction_s": 25.3, "extraction_images": 300, "extraction_images_per_s": 11.9, "extraction_splits": splits,
        "heads_s": 3.2, "evaluation_s": 0.4, "backbone_forward_s": None, "total_s": 31.0, **changes,
    }  # fmt: skip


def with_timing(record: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    return {**record, "schema_version": 4, "timing": value, "environment": {**record["environment"], "device": "cpu (x86_64, 2 threads)"}}


def test_the_time_line_names_each_phase_the_images_and_the_device() -> None:
    record = with_timing(full_record("vit-a", "t1", 0), timing())
    assert timing_line(record) == (
        "load 2.1 s · extraction 25.3 s (300 images, 11.9 img/s) · heads 3.2 s · evaluation 0.4 s · total 31.0 s on cpu (x86_64, 2 threads)"
    )
    val_cached = timing(extraction_images=270, extraction_splits={**timing()["extraction_splits"], "val": {"s": 0.1, "images": 0}})
    assert "(270 images, 11.9 img/s; val cached)" in timing_line(with_timing(record, val_cached))
    cached = {name: {"s": 0.1, "images": 0} for name in ("train", "val", "test")}
    all_cached = timing(extraction_s=0.3, extraction_images=0, extraction_images_per_s=None, extraction_splits=cached)
    assert "· extraction 0.3 s (cached) ·" in timing_line(with_timing(record, all_cached))
    online = timing(extraction_s=0.0, extraction_images=0, extraction_images_per_s=None, extraction_splits={}, backbone_forward_s=2.5)
    assert timing_line(with_timing(record, online)) == (
        "load 2.1 s · heads 3.2 s · evaluation 0.4 s · backbone forwards 2.5 s within those · total 31.0 s on cpu (x86_64, 2 threads)"
    )
    assert timing_line(full_record("vit-a", "t1", 0)) == ""  # written before timing was kept


def test_report_cell_shows_the_breakdown_and_older_records_still_report(tmp_path: Path) -> None:
    save(tmp_path, with_timing(full_record("vit-new", "t1", 0), timing()))
    old = full_record("vit-old", "t1", 0)  # a version-3 record: no timing field at all
    save(tmp_path, old)
    save(tmp_path, {**full_record("vit-four", "t1", 0), "schema_version": 4})  # the current version, written before timing
    con = connect(tmp_path)
    rows = dict(con.execute("SELECT backbone, timing FROM runs").fetchall())
    assert rows["vit-old"] is None and rows["vit-four"] is None and '"heads_s":3.2' in rows["vit-new"].replace(" ", "")
    new = dict(cell_view(con, tmp_path, "vit-new")[0][0].rows)
    assert new["device / time"].startswith("load 2.1 s · extraction 25.3 s (300 images") and new["device / time"].endswith(
        "on cpu (x86_64, 2 threads)"
    )
    for backbone in ("vit-old", "vit-four"):
        assert dict(cell_view(con, tmp_path, backbone)[0][0].rows)["device / time"] == "cuda:0; 1.5 s"
