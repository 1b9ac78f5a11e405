"""Leaderboard and layer tables from records, in every output format."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest

from aimbench.report import cell_summaries, layer_table, leaderboard, to_csv, to_markdown, to_rich
from aimbench.store import connect, write_record_atomic


def record(
    backbone: str, task: str, seed: int, best: float, last: float, created: str, limit: int | None = None, last_set: str = "2"
) -> dict[str, Any]:
    return {
        "schema_version": 2, "record_id": f"{backbone}{task}{seed}{created}", "created_at": created,
        "cell_key": f"{backbone}|{task}|linear|{seed}", "backbone": backbone, "task": task, "probe": "linear",
        "seed": seed, "image_limit": limit, "metric": "top1",
        "best_layer_set": "1", "best_layer": 1, "best_val_score": best, "best_test_score": best,
        "last_layer_set": last_set, "last_layer": 2, "last_val_score": last, "last_test_score": last,
        "weights_id": "random-init:seed0", "weights_sha256": "ab" * 32, "n_train": 10, "n_val": 5, "n_test": 5, "wall_time_s": 1.5,
        "layers": [
            {"layer_set": "0", "blocks": [0], "layer": 0, "token": "patch_mean", "hparams": {"lr": 0.01, "weight_decay": 0.0},
             "val_score": 0.1, "test_score": 0.2},
            {"layer_set": "1", "blocks": [1], "layer": 1, "token": "cls", "hparams": {"lr": 0.1, "weight_decay": 0.0},
             "val_score": best, "test_score": best},
            {"layer_set": last_set, "blocks": [1, 2], "layer": 2, "token": "patch_mean+cls", "hparams": {"lr": 0.3, "weight_decay": 1e-4},
             "val_score": last, "test_score": last},
        ],
    }  # fmt: skip


@pytest.fixture
def results(tmp_path: Path) -> Path:
    rows = [
        record("a", "t1", 0, 0.80, 0.70, "2026-01-01T00:00:00+00:00"),
        record("a", "t1", 1, 0.90, 0.60, "2026-01-01T00:00:00+00:00"),
        record("a", "t2", 0, 0.10, 0.10, "2026-01-01T00:00:00+00:00"),
        record("a", "t2", 0, 0.50, 0.40, "2026-02-01T00:00:00+00:00"),  # newer re-run of the same cell wins
        record("b", "t1", 0, 0.30, 0.20, "2026-01-01T00:00:00+00:00", limit=50),
    ]
    for i, row in enumerate(rows):
        write_record_atomic(tmp_path / "runs" / f"r{i}.json", row)
    return tmp_path


def test_summaries_average_seeds_and_take_the_latest_record(results: Path) -> None:
    rows = {(r["backbone"], r["task"]): r for r in cell_summaries(connect(results))}
    assert rows[("a", "t1")]["seeds"] == 2
    assert rows[("a", "t1")]["best_test_score"] == pytest.approx(0.85)
    assert rows[("a", "t1")]["last_test_score"] == pytest.approx(0.65)
    assert rows[("a", "t2")]["seeds"] == 1
    assert rows[("a", "t2")]["best_test_score"] == pytest.approx(0.50)
    assert rows[("b", "t1")]["image_limit"] == 50
    assert cell_summaries(connect(results), probe="attentive") == []


def test_leaderboard_pivots_marks_limits_and_means_only_complete_rows(results: Path) -> None:
    table = leaderboard(cell_summaries(connect(results)))
    assert table.columns == ["backbone", "probe", "layer", "t1", "t2", "mean"]
    rows = {(r[0], r[2]): r[3:] for r in table.rows}
    assert rows[("a", "best layer")] == ["85.0±7.1 (L1)", "50.0 (L1)", "67.5"]  # t1 has seeds 0.80 and 0.90
    assert rows[("a", "last layer")] == ["65.0±7.1 (L2)", "40.0 (L2)", "52.5"]
    assert rows[("b", "best layer")] == ["30.0* (L1)", "–", "–"]
    assert any("--limit" in note for note in table.notes)


def test_renderers(results: Path) -> None:
    summaries = cell_summaries(connect(results))
    markdown = to_markdown(leaderboard(summaries))
    assert "| backbone | probe | layer | t1 | t2 | mean |" in markdown
    assert "| a | linear | best layer | 85.0±7.1 (L1) | 50.0 (L1) | 67.5 |" in markdown
    parsed = list(csv.DictReader(io.StringIO(to_csv(summaries))))
    assert len(parsed) == 3 and float(parsed[0]["best_test_score"]) == pytest.approx(0.85)
    rich = to_rich(leaderboard(summaries))
    assert [c.header for c in rich.columns] == ["backbone", "probe", "layer", "t1", "t2", "mean"]


def test_layer_table_marks_best_and_last() -> None:
    table = layer_table(record("a", "t1", 0, 0.8, 0.7, "2026-01-01T00:00:00+00:00"))
    assert [row[-1] for row in table.rows] == ["", "best", "last"]
    assert table.rows[1][:5] == ["L1", "cls", "lr=0.1 wd=0", "80.0", "80.0"]
    assert table.rows[2][:3] == ["L2", "patch_mean+cls", "lr=0.3 wd=0.0001"]
    assert table.columns[3:5] == ["val top1", "test top1"]


def test_windows_are_labelled_by_name_and_metrics_named_in_headers(tmp_path: Path) -> None:
    row = record("a", "t1", 0, 0.8, 0.7, "2026-01-01T00:00:00+00:00", last_set="avg:1-2")
    row["metric"] = "macro_f1"
    write_record_atomic(tmp_path / "runs" / "r.json", row)
    table = leaderboard(cell_summaries(connect(tmp_path)))
    assert table.columns == ["backbone", "probe", "layer", "t1 (macro_f1)", "mean"]
    assert table.rows[1][3] == "70.0 (avg:1-2)"
    assert layer_table(row).rows[2][0] == "avg:1-2"


def test_records_of_an_older_schema_are_left_out(results: Path) -> None:
    old = record("z", "t1", 0, 0.99, 0.99, "2026-03-01T00:00:00+00:00")
    old["schema_version"] = 1
    write_record_atomic(results / "runs" / "old.json", old)
    assert "z" not in {r["backbone"] for r in cell_summaries(connect(results))}
