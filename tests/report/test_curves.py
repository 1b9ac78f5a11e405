"""Layer curves: per-block points averaged over seeds, best block chosen on val, and their plots."""

from __future__ import annotations

from pathlib import Path

import pytest

from aimbench.report.curves import curves_table, layer_curves, sparkline
from aimbench.report.filters import Filters
from aimbench.report.plots import write_plots
from aimbench.store import connect
from tests.store.test_db import layer, make_record, save


@pytest.fixture
def results(tmp_path: Path) -> Path:
    window = {"layer_set": "avg:2-3", "blocks": [2, 3], "layer": 3, "token": "cls", "hparams": None, "val_score": 0.79, "test_score": 0.97}
    peaked = [window, layer(0, 0.40, 0.30), layer(1, 0.70, 0.60), layer(2, 0.90, 0.85), layer(3, 0.80, 0.75)]
    for seed, shift in ((0, 0.0), (1, 0.02)):
        shifted = [{**layer, "val_score": layer["val_score"] + shift, "test_score": layer["test_score"] + shift} for layer in peaked]
        save(tmp_path, make_record("aim-x", "t1", seed, "2026-01-01T00:00:00+00:00", f"{seed}" * 32, shifted))
    save(tmp_path, make_record("flat", "t1", 0, "2026-01-01T00:00:00+00:00", "f" * 32, [layer(0, 0.5, 0.5), layer(1, 0.5, 0.6)]))
    return tmp_path


def test_curves_average_seeds_skip_windows_and_pick_the_best_block_on_val(results: Path) -> None:
    curves = {c.backbone: c for c in layer_curves(connect(results))}
    peaked = curves["aim-x"]
    assert peaked.blocks == [0, 1, 2, 3]  # the avg:2-3 window has no single depth
    assert peaked.test == pytest.approx([0.31, 0.61, 0.86, 0.76]) and peaked.seeds == 2
    assert peaked.best is not None and peaked.best.single_blocks() == [2]
    assert curves["flat"].best is not None and curves["flat"].best.single_blocks() == [0]  # the record's stored choice


def test_the_table_shows_the_peak_below_the_last_block(results: Path) -> None:
    table = curves_table(layer_curves(connect(results), Filters(backbones=("aim-x",))))
    # two seeds: no stored interval to show (±?) and none to tell tied blocks by (?)
    assert table.rows == [["t1", "aim-x · protocol legacy", "linear", "0–3", "▁▅█▇", "L2: 86.0 ±?", "?", "L3: 76.0 ±?", "+10.0", "0.67"]]
    assert sparkline([1.0, 1.0]) == "▁▁"


def test_plots_are_written_per_task_and_probe(results: Path, tmp_path: Path) -> None:
    written = write_plots(layer_curves(connect(results)), tmp_path / "plots")
    assert [p.name for p in written] == ["layers_t1_linear.png"]
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and written[0].stat().st_size > 5000
    svg = write_plots(layer_curves(connect(results)), tmp_path / "svg", fmt="svg")[0].read_text(encoding="utf-8")
    assert "<svg" in svg and "aim-x" in svg and "flat" in svg  # a legend entry per backbone
