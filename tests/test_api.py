"""``aimbench.evaluate``: the eval command as a call, returning exactly what the CLI records."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli

from aimbench import evaluate


def test_evaluate_returns_the_records_the_cli_writes_and_reuses_them(tmp_path: Path, tiny_cards: Path) -> None:
    common = {"limit": 40, "cards": [tiny_cards], "device": "cpu", "cache_dir": tmp_path / "cache"}
    [cell] = evaluate("micro-cls", "digits", "knn", layers="all,last", results=tmp_path / "api", **common)
    written = json.loads(cell.path.read_text(encoding="utf-8"))
    assert cell.record == {k: v for k, v in written.items() if k != "record_sha256"}
    assert cell.best == cell.layers[cell.record["best_layer_set"]] and cell.best.test_score == cell.record["best_test_score"]
    assert set(cell.layers) == {layer["layer_set"] for layer in written["layers"]} and not cell.skipped
    [again] = evaluate("micro-cls", "digits", "knn", layers="all,last", results=tmp_path / "api", **common)
    assert again.skipped and again.record == cell.record

    proc = run_cli("eval", "-b", "micro-cls", "-t", "digits", "--probe", "knn", "--layers", "all,last", "--limit", "40",
                   "--cards", str(tiny_cards), "--device", "cpu", "--results", str(tmp_path / "cli"),
                   env={"AIMBENCH_CACHE": str(tmp_path / "cache")})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    [cli_record] = (tmp_path / "cli" / "runs").glob("*.json")
    assert cli_record.name == cell.path.name  # the same cell, the same identity
    from_cli = json.loads(cli_record.read_text(encoding="utf-8"))
    varying = {"record_id", "created_at", "wall_time_s", "record_sha256", "environment", "timing"}
    assert from_cli["probe_config"].pop("feature_cache")["extracted_blocks"] == 0  # the CLI found the features the call extracted
    written["probe_config"].pop("feature_cache")
    assert {k: v for k, v in from_cli.items() if k not in varying} == {k: v for k, v in written.items() if k not in varying}
