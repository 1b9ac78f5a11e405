"""The leaderboard: seeds averaged, newest record per cell, paper rows and Δ beside measured rows."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest

from aimbench.identity import default_protocol
from aimbench.report import cell_summaries, leaderboard, to_csv, to_markdown, to_rich
from aimbench.report.filters import Filters
from aimbench.report.leaderboard import published_rows
from aimbench.report.views import leaderboard_view
from aimbench.store import connect, write_record_atomic


def record(
    backbone: str,
    task: str,
    seed: int,
    best: float,
    last: float,
    created: str,
    limit: int | None = None,
    last_set: str = "2",
    probe: str = "linear",
    weights: str = "",
    windows: tuple[tuple[str, list[int], float], ...] = (),
    layers_spec: str = "all",
) -> dict[str, Any]:
    """A version-3 record; ``windows`` adds layer sets (name, blocks, score) such as the card's ``last=avg:1-2``."""
    return {
        "schema_version": 3, "record_id": f"{backbone}{task}{seed}{created}{weights}{limit}", "created_at": created,
        "cell_key": f"{backbone}|{task}|{probe}|{seed}", "backbone": backbone, "task": task, "probe": probe,
        "seed": seed, "image_limit": limit, "metric": "top1", "protocol": default_protocol(probe), "layers_spec": layers_spec, "dtype": "fp32",
        "weights_key": f"sha256:{weights}" if weights else "", "weights_name": weights,
        "backbone_info": {"depth": 3, "windows": {"last": [0, 1, 2]}},
        "best_layer_set": "1", "best_layer": 1, "best_blocks": [1], "last_blocks": [1, 2], "best_val_score": best, "best_test_score": best,
        "last_layer_set": last_set, "last_layer": 2, "last_val_score": last, "last_test_score": last,
        "weights_id": "random-init:seed0", "weights_sha256": "ab" * 32, "n_train": 10, "n_val": 5, "n_test": 5, "wall_time_s": 1.5,
        "layers": [
            {"layer_set": "0", "blocks": [0], "layer": 0, "token": "patch_mean", "hparams": {"lr": 0.01, "weight_decay": 0.0},
             "val_score": 0.1, "test_score": 0.2},
            {"layer_set": "1", "blocks": [1], "layer": 1, "token": "cls", "hparams": {"lr": 0.1, "weight_decay": 0.0},
             "val_score": best, "test_score": best},
            {"layer_set": last_set, "blocks": [1, 2], "layer": 2, "token": "patch_mean+cls", "hparams": {"lr": 0.3, "weight_decay": 1e-4},
             "val_score": last, "test_score": last},
            *({"layer_set": name, "blocks": blocks, "layer": blocks[-1], "token": "patch", "hparams": {"lr": 0.1, "weight_decay": 0.1},
               "val_score": 0.0, "test_score": score} for name, blocks, score in windows),
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
    assert cell_summaries(connect(results), Filters(probes=("attentive",))) == []
    assert {r["backbone"] for r in cell_summaries(connect(results), Filters(backbones=("b*",)))} == {"b"}


def test_leaderboard_pivots_marks_limits_and_means_only_complete_rows(results: Path) -> None:
    table = leaderboard(cell_summaries(connect(results)))
    assert table.columns == ["backbone", "probe", "layer", "t1", "t2", "mean", "rank"]
    rows = {(r[0], r[2]): r[3:] for r in table.rows}
    # t1 has seeds 0.80 and 0.90; records without per-example outputs have no interval: ±?, never guessed
    assert rows[("a", "best layer")] == ["85.0 ±? ×2 (L1)", "50.0 ±? (L1)", "67.5 ±?", "1"]
    assert rows[("a", "last layer")] == ["65.0 ±? ×2 (L2)", "40.0 ±? (L2)", "52.5 ±?", "1"]
    assert rows[("b", "best layer")] == ["30.0 ±?* (L1)", "–", "–", ""]  # incomplete: no mean, no rank
    assert any("--limit" in note for note in table.notes)


def test_renderers(results: Path) -> None:
    summaries = cell_summaries(connect(results))
    markdown = to_markdown(leaderboard(summaries))
    assert "| backbone | probe | layer | t1 | t2 | mean | rank |" in markdown
    assert "| a | linear | best layer | 85.0 ±? ×2 (L1) | 50.0 ±? (L1) | 67.5 ±? | 1 |" in markdown
    parsed = list(csv.DictReader(io.StringIO(to_csv(summaries))))
    assert len(parsed) == 3 and float(parsed[0]["best_test_score"]) == pytest.approx(0.85)
    rich = to_rich(leaderboard(summaries))
    assert [c.header for c in rich.columns] == ["backbone", "probe", "layer", "t1", "t2", "mean", "rank"]


PAPER_CSV = """source,reference,model,arch,pretrain_data,backbone,probe,layer,task,metric,score_percent,blocks
T1,ref,M-1,ViT,data,a,attentive,last,t1,top1,60.0,
T1,ref,M-1,ViT,data,a,attentive,last,t2,top1,45.0,
T1,ref,Other,ViT,data,,attentive,last,t1,top1,70.0,
T2,ref,M-1,ViT,data,a,attentive,best,t1,top1,80.0,
T2,ref,M-1,ViT,data,a,attentive,last,t1,top1,60.0,
T1,ref,M-1,ViT,data,a,attentive,last,t9,top1,99.0,
T3,ref,M-1,ViT,data,a,attentive,3,t1,top1,50.0,0-1
"""

LAST = ("last=avg:0-2", [0, 1, 2])  # the card's 'last' window as a record names it


@pytest.fixture
def attentive(tmp_path: Path) -> tuple[Path, Path]:
    rows = [
        record(
            "a", "t1", 0, 0.85, 0.65, "2026-01-01T00:00:00+00:00", probe="attentive", windows=((*LAST, 0.66), ("avg:0-1", [0, 1], 0.55))
        ),
        record("a", "t2", 0, 0.50, 0.40, "2026-01-01T00:00:00+00:00", probe="attentive", windows=((*LAST, 0.41),)),
        record("a", "t1", 0, 0.75, 0.70, "2026-01-01T00:00:00+00:00", probe="linear", windows=((*LAST, 0.71),)),
        record("a", "t1", 0, 0.99, 0.98, "2026-01-01T00:00:00+00:00", probe="attentive", limit=50, windows=((*LAST, 0.97),)),
        record("b", "t1", 0, 0.30, 0.20, "2026-01-01T00:00:00+00:00", probe="attentive"),
    ]
    for i, row in enumerate(rows):
        write_record_atomic(tmp_path / "results" / "runs" / f"r{i}.json", row)
    (tmp_path / "published").mkdir()
    (tmp_path / "published" / "paper.csv").write_text(PAPER_CSV, encoding="utf-8")
    return tmp_path / "results", tmp_path / "published"


def test_a_delta_only_compares_the_same_probe_kind_window_and_full_split(attentive: tuple[Path, Path]) -> None:
    results, published = attentive
    table, _ = leaderboard_view(connect(results, published), Filters(), style="none")
    lines = [(r[0], r[1], r[2], r[3], r[4]) for r in table.rows]
    assert lines == [
        ("a", "attentive", "best layer", "85.0 (L1)", "50.0 (L1)"),
        ("a", "attentive", "last layer", "65.0 (L2)", "40.0 (L2)"),
        ("a", "attentive · limit 50", "best layer", "99.0* (L1)", "–"),
        ("a", "attentive · limit 50", "last layer", "98.0* (L2)", "–"),
        ("a", "linear", "best layer", "75.0 (L1)", "–"),
        ("a", "linear", "last layer", "70.0 (L2)", "–"),
        ("a", "M-1 [paper]", "last layer", "60.0", "45.0"),  # t9 is not shown: no record has it
        ("a", "M-1 [paper]", "best layer", "80.0", "–"),
        ("a", "M-1 [paper]", "layer 3", "50.0", "–"),
        # the measured score on exactly the paper's window, then Δ: never block 2 alone against a 3-block mean
        ("a", "attentive", "avg:0-2 (paper: last layer)", "66.0", "41.0"),
        ("a", "attentive", "avg:0-1 (paper: layer 3)", "55.0", "–"),
        ("a", "Δ attentive · protocol aim-v2 vs M-1", "avg:0-2 (paper: last layer)", "+6.0", "-4.0"),
        ("a", "Δ attentive · protocol aim-v2 vs M-1", "avg:0-1 (paper: layer 3)", "+5.0", "–"),
        ("b", "attentive", "best layer", "30.0 (L1)", "–"),
        ("b", "attentive", "last layer", "20.0 (L2)", "–"),
        ("", "Other [paper]", "last layer", "70.0", "–"),
    ]
    assert table.kinds == ["measured"] * 6 + ["paper"] * 3 + ["measured"] * 2 + ["delta"] * 2 + ["measured", "measured", "paper"]
    notes = " ".join(table.notes)
    # each mismatch says why it has no Δ
    assert "no Δ for a linear: the paper's numbers are attentive probes" in notes
    assert "no Δ for a attentive · limit 50: measured on a --limit subset, not the full test split" in notes
    assert "no Δ for a attentive vs M-1 best layer: the paper's window was not probed (add --layers best)" in notes
    means = {(r[0], r[1], r[2]): (r[-2], r[-1]) for r in table.rows}
    assert means[("a", "attentive", "last layer")] == ("52.5", "1")
    assert means[("a", "M-1 [paper]", "last layer")] == ("52.5", "2")  # ties rank in table order
    assert means[("a", "Δ attentive · protocol aim-v2 vs M-1", "avg:0-2 (paper: last layer)")] == ("+1.0", "")  # Δ rows are never ranked
    assert means[("a", "attentive", "avg:0-2 (paper: last layer)")] == ("53.5", "")  # window rows are not ranked either
    assert table.scores is not None and table.scores[6][3] == pytest.approx(0.60)


def test_no_paper_and_backbone_filters_drop_paper_rows(attentive: tuple[Path, Path]) -> None:
    results, published = attentive
    con = connect(results, published)
    table, _ = leaderboard_view(con, Filters(), paper=False)
    assert "paper" not in (table.kinds or [])
    assert [p.model for p in published_rows(con, ["t1"], Filters(backbones=("b",)))] == []
    assert [(p.model, p.layer) for p in published_rows(con, ["t1"], Filters(backbones=("a",)))] == [
        ("M-1", "last"), ("M-1", "best"), ("M-1", "3")]  # fmt: skip


def test_a_suite_shows_all_its_columns_and_paper_rows_alone(attentive: tuple[Path, Path]) -> None:
    results, published = attentive
    con = connect(results, published)
    table, summaries = leaderboard_view(con, Filters(tasks=("t9", "t1"), task_order=("t9", "t1")))
    assert table.columns[3:5] == ["t9", "t1"]
    assert [r[3] for r in table.rows if r[1] == "M-1 [paper]"] == ["99.0", "–", "–"]
    only_paper, none = leaderboard_view(con, Filters(tasks=("t9",), task_order=("t9",)))
    assert none == [] and [r[1] for r in only_paper.rows] == ["M-1 [paper]"]


def test_a_single_block_is_never_compared_with_the_papers_window(tmp_path: Path) -> None:
    """Block 2 alone (the card's final block) against the paper's mean of blocks 0-2: no Δ, and the note says so."""
    results, published = tmp_path / "results", tmp_path / "published"
    single = record("a", "t1", 0, 0.85, 0.85, "2026-01-01T00:00:00+00:00", probe="attentive", last_set="2", layers_spec="2")
    single["layers"] = [layer for layer in single["layers"] if layer["layer_set"] == "2"]
    write_record_atomic(results / "runs" / "single.json", single)
    published.mkdir()
    (published / "paper.csv").write_text(PAPER_CSV, encoding="utf-8")
    table, _ = leaderboard_view(connect(results, published), Filters())
    assert "delta" not in (table.kinds or [])
    assert "no Δ for a attentive vs M-1 last layer: the paper's window was not probed (add --layers last)" in " ".join(table.notes)
