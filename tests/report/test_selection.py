"""One selection rule everywhere: the best layer set is chosen once, when the cell finishes, and the
leaderboard, ``report cell``, ``report layers``, the plots, the HTML page and ``layer_metrics`` all
show that stored choice, also when val scores tie."""

from __future__ import annotations

from pathlib import Path

from aimbench.probes.results import LayerResult, summarise
from aimbench.report.cell_detail import find_cell, layer_table
from aimbench.report.curves import curves_table, layer_curves
from aimbench.report.filters import Filters
from aimbench.report.html import write_html
from aimbench.report.views import layers_view, leaderboard_view
from aimbench.store import connect, write_record_atomic
from tests.report.test_leaderboard import record

# val ties between block 2 and block 5 (and the deeper block has the better test score, so a view
# that re-chose "deepest on ties" would show a different number)
VAL = [0.30, 0.50, 0.80, 0.60, 0.70, 0.80]
TEST = [0.30, 0.50, 0.62, 0.60, 0.70, 0.75]


def _tied_record() -> dict:
    layers = [
        LayerResult(layer_set=str(i), blocks=(i,), token="cls", hparams={"lr": 0.1}, val_score=v, test_score=t)
        for i, (v, t) in enumerate(zip(VAL, TEST))
    ]
    result = summarise([], layers)  # the probes' own rule, as run_cell stores it
    base = record("tie", "t1", 0, 0.0, 0.0, "2026-01-01T00:00:00+00:00")
    return {
        **base,
        **{f"{which}_{k}": v for which in ("best", "last") for k, v in getattr(result, which).as_record().items()},
        "layers": [r.as_record() for r in result.layers],
    }


def test_every_view_shows_the_stored_choice_on_val_ties(tmp_path: Path) -> None:
    tied = _tied_record()
    assert tied["best_layer_set"] == "2"  # ties go to the first layer set given
    write_record_atomic(tmp_path / "runs" / "tie.json", tied)
    con = connect(tmp_path)

    board, _ = leaderboard_view(con, Filters(), style="none")
    assert [r[3] for r in board.rows if r[2] == "best layer"] == ["62.0 (L2)"]

    marks = {row[0]: row[-1] for row in layer_table(find_cell(con, tmp_path, "tie|t1")).rows}
    assert marks["L2"] == "best" and marks["L5"] == "last"

    table, curves, points = layers_view(con, Filters(), style="none")
    assert table.rows[0][5] == "L2: 62.0" and table.rows[0][8] == "-13.0"
    assert [p["block"] for p in points if p["best"]] == [2]
    assert curves[0].best is not None and curves[0].best.single_blocks() == [2]  # where the plot puts its star

    page = write_html(tmp_path / "site", board, curves_table(layer_curves(con), "none"), layer_curves(con), "t").read_text(encoding="utf-8")
    assert "L2: 62.0" in page and "L5: 75.0" in page and "62.0 (L2)" in page

    best = con.execute("SELECT list(layer ORDER BY layer) FROM layer_metrics WHERE is_best").fetchall()[0][0]
    assert best == [2]
