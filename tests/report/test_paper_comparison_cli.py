"""Through the real CLI: a user's own published numbers (``published/`` in a ``--cards`` folder)
beside their measured rows, with a Δ only on the paper's window and never for a single block."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli, write_card

from tests.launch.test_cells import WINDOWED

PUBLISHED = """source,reference,model,arch,pretrain_data,backbone,probe,layer,task,metric,score_percent,blocks
Ours Table 1,Us 2026,Micro-W,ViT-micro,none,micro-win,attentive,last,digits,top1,40.0,
"""


@pytest.mark.e2e
def test_a_delta_row_for_the_papers_window_and_a_note_for_a_single_block(tmp_path: Path) -> None:
    cards, results = tmp_path / "cards", tmp_path / "results"
    write_card(cards, "backbones", "winfam", WINDOWED)
    (cards / "published").mkdir()
    (cards / "published" / "ours.csv").write_text(PUBLISHED, encoding="utf-8")
    common = [
        "-b",
        "micro-win",
        "-t",
        "digits",
        "--probe",
        "attentive",
        "--epochs",
        "1",
        "--protocol",
        "aim-v1",
        "--cards",
        str(cards),
        "--results",
        str(results),
    ]
    for extra in ([], ["--layers", "2"]):
        done = run_cli("eval", *common, *extra)
        assert done.returncode == 0, done.stderr
    report = run_cli("report", "--cards", str(cards), "--results", str(results), "--format", "markdown")
    assert report.returncode == 0, report.stderr
    lines = [line for line in report.stdout.splitlines() if line.startswith("| micro-win")]
    assert any("| Micro-W [paper] | last layer | 40.0 |" in line for line in lines)
    window = [line for line in lines if "avg:1-2 (paper: last layer)" in line]
    assert len(window) == 2 and window[1].startswith(
        "| micro-win | Δ attentive · protocol aim-v1+epochs=1 · layers all,last,best vs Micro-W |"
    )
    assert not any("L2 (paper" in line for line in lines)  # block 2 alone is not the paper's window
    assert (
        "no Δ for micro-win attentive · protocol aim-v1+epochs=1 · layers 2 vs Micro-W last layer: the paper's window was not probed"
        in report.stdout
    )
