"""The shipped paper numbers: transcribed faithfully, matched to real cards and tasks."""

from __future__ import annotations

from pathlib import Path

import pytest

from aimbench.cards.registry import Registry
from aimbench.store.db import connect, published_dir
from aimbench.store.records import write_record_atomic
from tests.store.test_db import OLD

# The "Avg" column of the AIM paper's Table 6, as printed: a transcription error in any cell shows here.
PRINTED_AVERAGES = {
    "DINO ViT-B/8": 75.0, "iBOT ViT-L/16": 77.6, "DINOv2 ViT-g/14 (high res)": 81.9, "BEiT ViT-L": 65.4,
    "MAE ViT-H/14": 75.3, "MAE ViT-2B/14": 77.4, "AIM-0.6B": 75.6, "AIM-1B": 76.9, "AIM-3B": 77.6, "AIM-7B": 77.8,
    "AIM-7B (layer 20)": 79.6,
}  # fmt: skip


@pytest.fixture(scope="module")
def con(tmp_path_factory: pytest.TempPathFactory):
    results = tmp_path_factory.mktemp("results")
    write_record_atomic(results / "runs" / "one.json", OLD)
    return connect(results)


def test_the_shipped_folder_is_found_and_cited() -> None:
    folder = published_dir()
    assert (folder / "aim_v1.csv").is_file()
    assert "arXiv:2401.08541" in (folder / "README.md").read_text(encoding="utf-8")


def test_table6_rows_average_to_the_printed_means(con) -> None:
    rows = con.execute(
        "SELECT model, count(*), avg(score_percent) FROM (SELECT model, score * 100 AS score_percent FROM published "
        "WHERE source = 'aim-v1 Table 6') GROUP BY model"
    ).fetchall()
    assert {model for model, _, _ in rows} == set(PRINTED_AVERAGES)
    for model, count, mean in rows:
        assert count == 15
        assert mean == pytest.approx(PRINTED_AVERAGES[model], abs=0.05), model


def test_table7_last_layers_equal_table6_imagenet(con) -> None:
    pairs = con.execute(
        "SELECT t7.model, t7.score, t6.score FROM published t7 JOIN published t6 USING (model, task, layer) "
        "WHERE t7.source = 'aim-v1 Table 7' AND t6.source = 'aim-v1 Table 6'"
    ).fetchall()
    assert len(pairs) == 4
    assert all(t7 == pytest.approx(t6) for _, t7, t6 in pairs)
    best = dict(con.execute("SELECT backbone, score FROM published WHERE layer = 'best' ORDER BY backbone").fetchall())
    assert best == {
        "aim-1b": pytest.approx(0.823),
        "aim-3b": pytest.approx(0.833),
        "aim-600m": pytest.approx(0.794),
        "aim-7b": pytest.approx(0.84),
    }


def test_every_matched_backbone_and_task_is_a_real_card(con) -> None:
    registry = Registry.load()
    backbones = {b for (b,) in con.execute("SELECT DISTINCT backbone FROM published WHERE backbone <> ''").fetchall()}
    assert backbones <= set(registry.backbones)
    tasks = [t for (t,) in con.execute("SELECT task FROM published GROUP BY task ORDER BY min(position)").fetchall()]
    assert tasks == registry.suites()["aim15"]  # also in the paper's column order


def test_unreadable_published_numbers_are_a_user_error(tmp_path: Path) -> None:
    from aimbench.errors import UserError

    write_record_atomic(tmp_path / "results" / "runs" / "one.json", OLD)
    (tmp_path / "pub").mkdir()
    (tmp_path / "pub" / "bad.csv").write_text("source,model\nx,y,z,w\n", encoding="utf-8")
    with pytest.raises(UserError, match="published numbers"):
        connect(tmp_path / "results", tmp_path / "pub")
    empty = connect(tmp_path / "results", tmp_path / "none")
    assert empty.execute("SELECT count(*) FROM published").fetchall() == [(0,)]
