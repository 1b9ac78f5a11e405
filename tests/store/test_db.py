"""DuckDB views over record files: runs, latest per cell, and per-layer metrics."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from aimbench.errors import UserError
from aimbench.store.db import connect
from aimbench.store.records import record_path, runs_dir, write_record_atomic


def layer(i: int, val: float, test: float, token: str = "cls") -> dict:
    return {
        "layer_set": str(i),
        "blocks": [i],
        "layer": i,
        "token": token,
        "hparams": {"lr": 10.0**-i, "weight_decay": 0.0005 * i},
        "val_score": val,
        "test_score": test,
    }


def make_record(
    backbone: str,
    task: str,
    seed: int,
    created_at: str,
    record_id: str,
    layers: list[dict],
    probe: str = "linear",
    image_limit: int | None = None,
) -> dict:
    best = max(layers, key=lambda layer: layer["val_score"])
    last = layers[-1]
    return {
        "schema_version": 2,
        "record_id": record_id,
        "created_at": created_at,
        "cell_key": f"{backbone}|{task}|{probe}|{seed}",
        "config_hash": record_id[:8],
        "backbone": backbone,
        "task": task,
        "probe": probe,
        "seed": seed,
        "image_limit": image_limit,
        "metric": "top1",
        **{f"best_{k}": v for k, v in best.items()},
        **{f"last_{k}": v for k, v in last.items()},
        "layers": layers,
    }


def save(results: Path, record: dict) -> Path:
    path = record_path(results, f"{record['cell_key']}__{record['config_hash']}.json")
    write_record_atomic(path, record)
    return path


OLD = make_record("vit-a", "digits", 0, "2024-05-01T10:00:00.000000+00:00", "a" * 32, [layer(0, 0.50, 0.40), layer(1, 0.70, 0.60)])
NEW = make_record(
    "vit-a", "digits", 0, "2024-05-02T09:00:00.000000+00:00", "b" * 32, [layer(0, 0.55, 0.45), layer(1, 0.90, 0.80), layer(2, 0.85, 0.75)]
)
OTHER_SEED = make_record(
    "vit-a", "digits", 1, "2024-05-01T11:00:00.000000+00:00", "c" * 32, [layer(0, 0.52, 0.42), layer(1, 0.72, 0.62)], image_limit=64
)
OTHER_TASK = make_record("vit-b", "fashion-mnist", 0, "2024-04-01T00:00:00.000000+00:00", "d" * 32, [layer(0, 0.30, 0.20, token="mean")])


@pytest.fixture
def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    for record in (NEW, OLD, OTHER_SEED, OTHER_TASK):
        save(root, record)
    return root


def rows(con, sql: str, params: dict | None = None) -> list[dict]:
    cursor = con.execute(sql, params or {})
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


# ---------------------------------------------------------------------------------------------
# no records


def test_no_results_dir_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        connect(tmp_path / "results")
    assert "aimbench eval" in str(info.value)
    assert str(runs_dir(tmp_path / "results")) in str(info.value)


def test_empty_or_only_partial_records_is_a_user_error(tmp_path: Path) -> None:
    folder = runs_dir(tmp_path)
    folder.mkdir(parents=True)
    with pytest.raises(UserError, match="aimbench eval"):
        connect(tmp_path)
    (folder / ".cell.json.part").write_text('{"cell_key": "half')
    (folder / "notes.txt").write_text("not a record")
    with pytest.raises(UserError, match="aimbench eval"):
        connect(tmp_path)


# ---------------------------------------------------------------------------------------------
# views


def test_runs_holds_every_record(results: Path) -> None:
    con = connect(results)
    got = rows(con, "SELECT record_id, cell_key, seed, image_limit FROM runs ORDER BY record_id")
    assert [r["record_id"] for r in got] == ["a" * 32, "b" * 32, "c" * 32, "d" * 32]
    assert [r["cell_key"] for r in got] == ["vit-a|digits|linear|0"] * 2 + ["vit-a|digits|linear|1", "vit-b|fashion-mnist|linear|0"]
    assert [r["image_limit"] for r in got] == [None, None, 64, None]


def test_latest_keeps_the_newest_record_per_cell(results: Path) -> None:
    con = connect(results)
    got = rows(con, "SELECT cell_key, record_id, best_layer, best_test_score, last_layer, last_test_score FROM latest ORDER BY cell_key")
    assert [r["cell_key"] for r in got] == ["vit-a|digits|linear|0", "vit-a|digits|linear|1", "vit-b|fashion-mnist|linear|0"]
    newest = got[0]
    assert newest["record_id"] == "b" * 32  # 2024-05-02 beats 2024-05-01 although written first
    assert (newest["best_layer"], newest["best_test_score"]) == (1, pytest.approx(0.80))
    assert (newest["last_layer"], newest["last_test_score"]) == (2, pytest.approx(0.75))
    assert got[1]["record_id"] == "c" * 32 and got[2]["record_id"] == "d" * 32


def test_latest_compares_times_not_file_order(tmp_path: Path) -> None:
    """Microsecond-apart records and names that sort the other way still resolve to the newer one."""
    root = tmp_path / "results"
    older = make_record("m", "t", 0, "2024-05-01T10:00:00.000001+00:00", "f" * 32, [layer(0, 0.1, 0.1)])
    newer = make_record("m", "t", 0, "2024-05-01T10:00:00.000002+00:00", "0" * 32, [layer(0, 0.9, 0.9)])
    save(root, older)
    save(root, newer)
    got = rows(connect(root), "SELECT record_id, best_test_score FROM latest")
    assert got == [{"record_id": "0" * 32, "best_test_score": pytest.approx(0.9)}]


def test_latest_breaks_ties_by_record_id(tmp_path: Path) -> None:
    root = tmp_path / "results"
    stamp = "2024-05-01T10:00:00.000000+00:00"
    for rid, value in (("9" * 32, 0.9), ("1" * 32, 0.1), ("5" * 32, 0.5)):
        save(root, make_record("m", "t", 0, stamp, rid, [layer(0, value, value)]))
    for _ in range(2):  # the same answer every session
        got = rows(connect(root), "SELECT record_id FROM latest")
        assert got == [{"record_id": "1" * 32}]


def test_layer_metrics_unnests_latest_layers(results: Path) -> None:
    con = connect(results)
    got = rows(con, "SELECT * FROM layer_metrics ORDER BY cell_key, layer")
    assert [(r["cell_key"], r["layer"]) for r in got] == [
        ("vit-a|digits|linear|0", 0),
        ("vit-a|digits|linear|0", 1),
        ("vit-a|digits|linear|0", 2),
        ("vit-a|digits|linear|1", 0),
        ("vit-a|digits|linear|1", 1),
        ("vit-b|fashion-mnist|linear|0", 0),
    ]
    first = got[1]
    assert json.loads(first.pop("hparams")) == {"lr": pytest.approx(0.1), "weight_decay": pytest.approx(0.0005)}  # JSON: probes differ
    assert first == {
        "backbone": "vit-a",
        "task": "digits",
        "probe": "linear",
        "seed": 0,
        "cell_key": "vit-a|digits|linear|0",
        "metric": "top1",
        "created_at": datetime(2024, 5, 2, 9, 0),
        "layer_set": "1",
        "blocks": [1],
        "layer": 1,
        "token": "cls",
        "val_score": pytest.approx(0.90),
        "test_score": pytest.approx(0.80),
        "is_best": True,
        "is_last": False,
        # identity columns: a version-2 record is read as the card's weights and the legacy protocol
        "weights_key": "",
        "weights_name": "",
        "protocol": "legacy",
        "layers_spec": None,
        "image_limit": None,
        "dtype": None,
        # records before version 5 have no interval, and these none of n_test: null, not an error
        "test_low": None,
        "test_high": None,
        "n_test": None,
    }
    assert got[-1]["token"] == "mean"
    # only the latest record's layers: the old record's 0.70 val never shows up
    assert con.execute("SELECT count(*) FROM layer_metrics WHERE val_score = 0.70").fetchone() == (0,)


def test_stray_part_file_is_ignored(results: Path) -> None:
    (runs_dir(results) / ".x.json.part").write_text(
        '{"cell_key": "vit-a|digits|linear|0", "created_at": "2099-01-01T00:00:00+00:00", garbage'
    )
    (runs_dir(results) / ".y.json.part").write_text(
        json.dumps(make_record("vit-a", "digits", 0, "2099-01-01T00:00:00.000000+00:00", "e" * 32, [layer(0, 1.0, 1.0)]))
    )
    con = connect(results)
    assert con.execute("SELECT count(*) FROM runs").fetchone() == (4,)
    assert con.execute("SELECT record_id FROM latest WHERE cell_key = 'vit-a|digits|linear|0'").fetchone() == ("b" * 32,)
    assert con.execute("SELECT count(*) FROM layer_metrics").fetchone() == (6,)


def test_records_with_different_fields_are_unioned_by_name(results: Path) -> None:
    extra = make_record("vit-c", "digits", 0, "2024-06-01T00:00:00.000000+00:00", "e" * 32, [layer(0, 0.6, 0.5)])
    del extra["image_limit"]
    extra["wall_time_s"] = 12.5
    save(results, extra)
    got = rows(connect(results), "SELECT record_id, image_limit, wall_time_s FROM latest ORDER BY record_id")
    assert got[-1] == {"record_id": "e" * 32, "image_limit": None, "wall_time_s": pytest.approx(12.5)}
    assert got[0]["wall_time_s"] is None


def test_results_dir_with_a_quote_in_its_name(tmp_path: Path) -> None:
    root = tmp_path / "it's results"
    save(root, OLD)
    assert connect(root).execute("SELECT record_id FROM latest").fetchone() == ("a" * 32,)


def test_results_dir_with_brackets_in_its_name(tmp_path: Path) -> None:
    root = tmp_path / "results[old]"
    save(root, OLD)
    assert connect(root).execute("SELECT record_id FROM latest").fetchone() == ("a" * 32,)
