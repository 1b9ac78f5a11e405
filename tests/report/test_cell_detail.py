"""One cell in full: found by key or unique prefix, with its provenance and per-layer table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aimbench.errors import UserError
from aimbench.report.cell_detail import find_cell, layer_table, protocol_table, provenance_table
from aimbench.store import connect
from tests.report.test_leaderboard import record
from tests.store.test_db import save


def full_record(backbone: str, task: str, seed: int) -> dict:
    base = record(backbone, task, seed, 0.8, 0.7, "2026-01-01T00:00:00+00:00")
    base.update({
        "config_hash": f"{backbone}{seed}", "dtype": "bf16", "task_version": 3, "dataset_source": "hf:org/data@abc",
        "dataset_revision": "abc", "split_policy": {"train": "train", "val": "0.1 of train", "test": "test"},
        "secondary_metrics": ["macro_f1"], "best_test_secondary": {"macro_f1": 0.61},
        "best_token": "cls", "last_token": "patch_mean", "best_hparams": {"lr": 0.1, "weight_decay": 0.0},
        "last_hparams": {"lr": 0.3, "weight_decay": 1e-4},
        "probe_config": {"kind": "linear", "optimizer": "adamw", "schedule": "cosine", "epochs": 100, "effective_batch_size": 1024,
                         "base_batch_size": 256, "scaled_learning_rates": [0.004, 0.4], "learning_rates": [0.001, 0.1],
                         "weight_decays": [0.0, 0.0001], "selection": "best val"},
        "backbone_info": {"arch": "vit_x", "adapter": "timm", "depth": 3, "preprocess": {"image_size": 224},
                          "features": {"source": "block output", "norm_applied": False, "prefix_layout": ["cls"]}},
        "environment": {"aimbench_version": "0.1.0", "git_sha": "deadbeef", "torch_version": "2.14", "device": "cuda:0"},
    })  # fmt: skip
    return base


@pytest.fixture
def results(tmp_path: Path) -> Path:
    for backbone, seed in (("vit-a", 0), ("vit-a", 1), ("vit-b", 0)):
        save(tmp_path, full_record(backbone, "t1", seed))
    return tmp_path


def test_find_cell_by_key_or_unique_prefix(results: Path) -> None:
    con = connect(results)
    assert find_cell(con, results, "vit-b")["cell_key"] == "vit-b|t1|linear|0"
    assert find_cell(con, results, "vit-a|t1|linear|1")["seed"] == 1
    with pytest.raises(UserError, match="matches 2 cells"):
        find_cell(con, results, "vit-a")
    with pytest.raises(UserError, match="no cell 'vit-c'"):
        find_cell(con, results, "vit-c")


def test_provenance_names_what_produced_the_number(results: Path) -> None:
    fields = dict(provenance_table(find_cell(connect(results), results, "vit-b")).rows)
    assert fields["best layer (val top1)"] == "L1 (cls, lr=0.1 wd=0): val 80.0, test 80.0"
    assert fields["effective batch / lr"] == "1024 (base 256); scaled lr 0.004, 0.4"
    assert json.loads(fields["secondary metrics"]) == {"macro_f1": 0.61}
    assert fields["weights"] == "random-init:seed0 sha256:" + "ab" * 32 + " (the card's)"
    assert "dtype bf16" in fields["backbone"] and "input 224 px" in fields["backbone"]
    assert fields["data"] == "t1 v3 from hf:org/data@abc @ abc"
    assert "git_sha deadbeef" in fields["software"] and fields["device / time"] == "cuda:0; 1.5 s"


def test_layer_table_marks_best_and_last(results: Path) -> None:
    table = layer_table(find_cell(connect(results), results, "vit-b"))
    assert [row[0] for row in table.rows] == ["L0", "L1", "L2"]
    assert [row[-1] for row in table.rows] == ["", "best", "last"]


def test_records_without_a_protocol_show_none() -> None:
    """Released heads (and records written before protocol cards) have no recipe to show."""
    old = {**full_record("vit-a", "t1", 0), "protocol": ""}
    assert dict(provenance_table(old).rows)["protocol"] == "–" and protocol_table(old) is None
