"""A score outside [0, 1], NaN or inf is no measurement: the store refuses to write it, and a
record file holding one is left out of reports with a warning."""

from __future__ import annotations

from pathlib import Path

import pytest

from aimbench.errors import UserError
from aimbench.store.db import open_session
from aimbench.store.records import record_path, record_text
from aimbench.store.scores import bad_scores
from tests.store.test_db import NEW, OLD, layer, make_record, save


def test_bad_scores_names_every_field_out_of_range() -> None:
    assert bad_scores(NEW) == []
    record = {
        **NEW,
        "best_test_score": float("nan"),
        "layers": [layer(0, 1.5, 0.4), {**layer(1, 0.2, 0.3), "test_secondary": {"macro_f1": -0.1}}],
    }
    assert bad_scores(record) == ["best_test_score", "layers[0].val_score", "layers[1].test_secondary.macro_f1"]
    assert bad_scores({**NEW, "best_val_score": float("inf")}) == ["best_val_score"]


def test_the_store_refuses_to_write_an_out_of_range_score(tmp_path: Path) -> None:
    bad = make_record("vit-a", "digits", 0, "2024-05-03T09:00:00.000000+00:00", "c" * 32, [layer(0, 0.5, 1.2)])
    with pytest.raises(UserError, match=r"layers\[0\].test_score is not a score in \[0, 1\]; nothing was recorded"):
        save(tmp_path / "results", bad)
    assert not list((tmp_path / "results").rglob("*.json"))


def test_a_sealed_record_holding_one_is_left_out_of_reports_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    save(results, OLD)
    bad = {**NEW, "best_test_score": 7.5}  # written by another tool, or by hand and sealed again
    path = record_path(results, f"{bad['cell_key']}__{bad['config_hash']}x.json")
    path.write_text(record_text(bad))
    session = open_session(results)
    assert session.con.execute("SELECT record_id FROM runs").fetchall() == [(OLD["record_id"],)]
    assert f"warning: run record {path} holds a score outside [0, 1] or not a number (best_test_score); left out" in capsys.readouterr().err
