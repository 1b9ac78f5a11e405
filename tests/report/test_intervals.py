"""Intervals in every format, ranks that tie what the intervals cannot separate, Δ inside or outside
the measured interval, and the grid-edge mark: values, from hand-made bounds and records."""

from __future__ import annotations

from pathlib import Path

import pytest

from aimbench.report import leaderboard, to_latex, to_markdown
from aimbench.report.comparison import LayerScore, Paper
from aimbench.report.filters import Filters
from aimbench.report.intervals import Bounds, apart, hover, mean_half, show
from aimbench.report.ranks import Ranked, tied_ranks
from aimbench.report.render import latex_cell
from aimbench.report.setups import Setup
from aimbench.report.views import leaderboard_view
from aimbench.store import connect, write_record_atomic
from tests.report.test_leaderboard import record


def test_a_score_shows_the_larger_half_of_its_interval_or_both_ends_or_unavailable() -> None:
    assert show(0.785, Bounds(0.781, 0.789)) == "78.5 ±0.4"
    assert show(0.97, Bounds(0.95, 0.98)) == "97.0 ±2.0"  # asymmetric: the larger half, never the narrower one
    assert show(0.97, Bounds(0.95, 0.98), "range") == "97.0 (95.0–98.0)"
    assert show(0.97, Bounds(0.95, 0.98), "none") == "97.0"
    assert show(0.5, None) == "50.0 ±?" and show(0.5, None, "range") == "50.0 (?)"
    assert show(None, None) == "–"
    assert hover(0.785, Bounds(0.781, 0.789), 300) == "95% interval 78.10–78.90 (bootstrap over test examples, n_test=300)"
    assert "3 seeds and test examples" in (hover(0.785, Bounds(0.781, 0.789, seeds=3)) or "")
    assert "no interval" in (hover(0.5, None) or "")


def test_apart_uses_the_unpaired_half_width_of_the_difference() -> None:
    assert not apart(0.80, 0.03, 0.76, 0.03)  # 4 points < sqrt(2) * 3 = 4.24
    assert apart(0.80, 0.03, 0.75, 0.03)
    assert mean_half([0.03, 0.04]) == pytest.approx(0.025)


def test_ranks_tie_rows_not_apart_from_their_group_leader() -> None:
    rows = [Ranked(0, "g", 0.90, 0.01), Ranked(1, "g", 0.80, 0.02), Ranked(2, "g", 0.79, 0.02), Ranked(3, "g", 0.77, 0.02)]
    # against the leader 0.80 (half-width of a difference sqrt(2) * 2 = 2.83 points): 0.79 ties, 0.77 does not
    assert tied_ranks(rows) == {0: "1", 1: "2-3", 2: "2-3", 3: "4"}
    chain = [Ranked(i, "g", 0.80 - 0.02 * i, 0.015) for i in range(4)]  # each 2 points below the one above
    assert tied_ranks(chain) == {0: "1-2", 1: "1-2", 2: "3-4", 3: "3-4"}  # against the leader, not the row above
    unknown = [Ranked(0, "g", 0.80, None), Ranked(1, "g", 0.80, 0.05), Ranked(2, "h", 0.10, 0.05)]
    assert tied_ranks(unknown) == {0: "1", 1: "2", 2: "1"}  # no interval: a plain position; groups apart


def test_latex_sets_the_half_width_small() -> None:
    assert latex_cell("78.5 ±0.4 ×2* (L1)") == r"78.5\,{\scriptsize$\pm$0.4} $\times$2* (L1)"
    assert latex_cell("50.0 ±?") == r"50.0\,{\scriptsize$\pm$?}"


def _setup(backbone: str, probe: str = "attentive") -> Setup:
    return Setup(backbone=backbone, weights_key="", probe=probe, protocol="aim-v2", layers_spec="all", image_limit=None, dtype="fp32")


def _summary(backbone: str, task: str, best: float, probe: str = "attentive", seeds: int = 1) -> dict:
    return {"backbone": backbone, "weights_key": "", "weights_name": "", "probe": probe, "protocol": "aim-v2", "layers_spec": "all",
            "image_limit": None, "dtype": "fp32", "task": task, "metric": "top1", "seeds": seeds, "n_test": 1000,
            "best_test_score": best, "best_test_std": None, "best_layer_set": "5", "last_test_score": best - 0.01,
            "last_test_std": None, "last_layer_set": "11", "depth": 12, "windows": None}  # fmt: skip


def test_the_leaderboard_shows_intervals_and_ties_ranks_in_every_format() -> None:
    scores = {"a": (0.800, 0.700), "b": (0.790, 0.705), "c": (0.600, 0.500)}
    summaries = [_summary(b, t, s) for b, (s1, s2) in scores.items() for t, s in (("t1", s1), ("t2", s2))]
    bounds = {(_setup(b), t, w): Bounds(s - 0.01 - (w == "last") * 0.01, s + 0.01 - (w == "last") * 0.01)
              for b, (s1, s2) in scores.items() for t, s in (("t1", s1), ("t2", s2)) for w in ("best", "last")}  # fmt: skip
    table = leaderboard(summaries, bounds=bounds)
    rows = {(r[0], r[2]): r[3:] for r in table.rows}
    assert rows[("a", "best layer")] == ["80.0 ±1.0 (L5)", "70.0 ±1.0 (L5)", "75.0 ±0.7", "1-2"]
    assert rows[("b", "best layer")] == ["79.0 ±1.0 (L5)", "70.5 ±1.0 (L5)", "74.8 ±0.7", "1-2"]  # 0.25 points apart: tied
    assert rows[("c", "best layer")][-1] == "3"
    assert any("rows share a rank (2-3)" in note for note in table.notes)
    assert "| a | attentive | best layer | 80.0 ±1.0 (L5) | 70.0 ±1.0 (L5) | 75.0 ±0.7 | 1-2 |" in to_markdown(table)
    assert r"80.0\,{\scriptsize$\pm$1.0} (L5)" in to_latex(table)
    assert table.hints is not None and table.hints[0][3] == "95% interval 79.00–81.00 (bootstrap over test examples)"
    ranged = leaderboard(summaries, bounds=bounds, style="range")
    assert ranged.rows[0][3] == "80.0 (79.0–81.0) (L5)"


def test_a_delta_says_whether_the_paper_lies_inside_the_measured_interval() -> None:
    summaries = [_summary("a", "t1", 0.80), _summary("a", "t2", 0.70)]
    layers = {(_setup("a"), t): [LayerScore("last=avg:9-11", (9, 10, 11), s, s - 0.02, s + 0.02)] for t, s in (("t1", 0.78), ("t2", 0.68))}
    paper = Paper("M", "a", "attentive", "last", "9-11", {"t1": 0.79, "t2": 0.75})
    table = leaderboard(summaries, [paper], ["t1", "t2"], layers)
    delta = next(r for r, kind in zip(table.rows, table.kinds or []) if kind == "delta")
    assert delta[3:5] == ["-1.0 (in)", "-7.0 (out)"]
    window = next(r for r in table.rows if r[2].startswith("avg:9-11"))
    assert window[3] == "78.0 ±2.0"
    assert any("(in)/(out)" in note for note in table.notes)


def test_a_best_head_at_its_grids_edge_is_marked(tmp_path: Path) -> None:
    grid = {"learning_rates": [0.01, 0.1, 0.3], "scaled_learning_rates": [0.04, 0.4, 1.2], "weight_decays": [0.0, 1e-4, 1e-2]}
    cases = {"top": (0.3, 0.0), "scaled": (1.2, 0.0), "inside": (0.1, 0.0), "wd": (0.1, 1e-2), "scaled-inside": (0.4, 1e-4)}
    for i, (name, (lr, wd)) in enumerate(cases.items()):
        rec = record(name, "t1", 0, 0.5 + i / 100, 0.4, "2026-01-01T00:00:00+00:00")
        rec.update(probe_config=grid, best_hparams={"lr": lr, "weight_decay": wd})
        write_record_atomic(tmp_path / "runs" / f"{name}.json", rec)
    table, _ = leaderboard_view(connect(tmp_path), Filters(), paper=False)
    marked = {r[0] for r in table.rows if r[2] == "best layer" and "^" in r[3]}
    assert marked == {"top", "scaled", "wd"}  # wd 0 is a floor, not an edge; a scaled rate is checked against the scaled grid
    assert any(note.startswith("^ the best head's lr or wd") for note in table.notes)
