"""Every run keeps its own row: other weights or limits never replace or average into each other,
every format shows which weights a row used, ranks stay within one probe kind and image limit,
and version-2 records are still read (upgraded as they are read)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from aimbench.report import cell_summaries, to_csv, to_latex, to_markdown, to_rich
from aimbench.report.curves import curves_table, layer_curves
from aimbench.report.filters import Filters
from aimbench.report.html import write_html
from aimbench.report.views import leaderboard_view
from aimbench.store import connect, write_record_atomic
from tests.report.test_leaderboard import record
from tests.store.test_db import OLD, save

DAY1, DAY2 = "2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00"


@pytest.fixture
def results(tmp_path: Path) -> Path:
    rows = [
        record("aim-tiny", "fmnist", 0, 0.626, 0.600, DAY1, weights="tiny"),  # a user's trained trunk
        record("aim-tiny", "fmnist", 0, 0.638, 0.610, DAY2),  # later: the card's random init, same cell otherwise
        record("aim-tiny", "fmnist", 0, 0.700, 0.650, DAY2, weights="tiny", limit=500),
        record("aim-tiny", "fmnist", 0, 0.720, 0.660, DAY2, weights="tiny", limit=3000),
        record("aim-tiny", "fmnist", 0, 0.900, 0.900, DAY2, probe="knn"),  # a better kNN never outranks linear rows
        record("vit", "fmnist", 0, 0.500, 0.400, DAY1),
    ]
    for i, row in enumerate(rows):
        write_record_atomic(tmp_path / "runs" / f"r{i}.json", row)
    return tmp_path


def _best_rows(table) -> dict[tuple[str, ...], list[str]]:
    return {tuple(r[:3]): r[4:] for r in table.rows if r[3] == "best layer"}


def test_other_weights_and_limits_are_rows_of_their_own_in_every_format(results: Path, tmp_path: Path) -> None:
    con = connect(results)
    table, summaries = leaderboard_view(con, Filters(), style="none")
    assert table.columns == ["backbone", "weights", "probe", "layer", "fmnist", "mean", "rank"]
    assert _best_rows(table) == {
        ("aim-tiny", "", "knn"): ["90.0 (L1)", "90.0", "1"],
        ("aim-tiny", "", "linear"): ["63.8 (L1)", "63.8", "1"],  # the random init did not replace the trained trunk's 62.6
        ("aim-tiny", "tiny", "linear"): ["62.6 (L1)", "62.6", "2"],
        ("aim-tiny", "tiny", "linear · limit 500"): ["70.0* (L1)", "70.0", "1"],  # ranked only against the same limit
        ("aim-tiny", "tiny", "linear · limit 3000"): ["72.0* (L1)", "72.0", "1"],
        ("vit", "", "linear"): ["50.0 (L1)", "50.0", "3"],
    }
    markdown = to_markdown(table)
    assert "| aim-tiny | tiny | linear · limit 500 | best layer | 70.0* (L1) | 70.0 | 1 |" in markdown
    assert "| aim-tiny |  | linear | best layer | 63.8 (L1) | 63.8 | 1 |" in markdown
    latex = to_latex(table)
    assert "weights" in latex and latex.count("tiny") >= 6  # 3 setups x best and last rows
    long_form = list(csv.DictReader(io.StringIO(to_csv(summaries))))
    assert sorted((r["weights_name"], r["image_limit"], r["probe"]) for r in long_form) == [
        ("", "", "knn"),
        ("", "", "linear"),
        ("", "", "linear"),
        ("tiny", "", "linear"),
        ("tiny", "3000", "linear"),
        ("tiny", "500", "linear"),
    ]
    rich = io.StringIO()
    from rich.console import Console

    Console(file=rich, width=250).print(to_rich(table))
    assert "linear · limit 3000" in rich.getvalue()
    page = write_html(tmp_path / "site", table, curves_table(layer_curves(con)), layer_curves(con), "test").read_text(encoding="utf-8")
    assert '<th class="text">weights</th>' in page and "linear · limit 500" in page
    assert "aim-tiny@tiny · limit 500" in page  # the layer curves are per setup too


def test_the_weights_column_is_left_out_when_every_row_uses_the_cards_weights(results: Path) -> None:
    table, _ = leaderboard_view(connect(results), Filters(backbones=("vit",)))
    assert table.columns == ["backbone", "probe", "layer", "fmnist", "mean", "rank"]


def test_version_2_records_are_read_beside_version_3(results: Path) -> None:
    save(results, OLD)  # schema_version 2: no weights_key, weights_name or protocol
    summaries = {(s["backbone"], s["protocol"]): s for s in cell_summaries(connect(results))}
    old = summaries[("vit-a", "legacy")]
    assert old["weights_key"] == "" and old["weights_name"] == "" and old["best_test_score"] == pytest.approx(0.60)
    assert summaries[("vit", "dinov2-linear")]["best_test_score"] == pytest.approx(0.50)
    table, _ = leaderboard_view(connect(results), Filters(backbones=("vit-a",)))
    assert table.rows[0][1] == "linear · protocol legacy"  # its probe defaults predate protocol cards: said, not hidden


def test_a_version_2_record_with_a_file_override_gets_its_weights_from_the_record(tmp_path: Path) -> None:
    old = {**OLD, "weights_id": "file:trunk.safetensors", "weights_sha256": "cd" * 32}
    save(tmp_path, old)
    [row] = cell_summaries(connect(tmp_path))
    assert row["weights_key"] == "sha256:" + "cd" * 32 and row["weights_name"] == "trunk"
