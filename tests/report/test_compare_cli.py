"""Intervals, tied ranks and ``report compare`` through the real CLI, on records of real eval runs.

Two micro backbones on two tasks: digits (top-1: the exact McNemar test) and the same images scored
by mean-per-class accuracy (a task card in the cards folder: the paired bootstrap's p-value), a
second seed of one cell (an interval over seeds), and a record of the old kind, without per-example
outputs, that every view must show as unavailable rather than guess.
"""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest
from conftest import REPO, TINY_BACKBONE_CARD, run_cli, write_card
from test_cli import assert_one_line_error

from aimbench.store import write_record_atomic
from aimbench.store.predictions import read_predictions
from aimbench.store.records import read_record

TASKS = "digits,digits-mpc"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compare")
    cards = root / "cards"
    write_card(cards, "backbones", "testfam", TINY_BACKBONE_CARD)
    digits = (REPO / "tasks" / "digits.toml").read_text(encoding="utf-8")
    write_card(
        cards,
        "tasks",
        "digits-mpc",
        digits.replace('name = "digits"', 'name = "digits-mpc"').replace('metric = "top1"', 'metric = "mean_per_class"'),
    )
    common = (
        "--cards",
        str(cards),
        "--results",
        str(root / "results"),
        "--limit",
        "120",
        "--epochs",
        "5",
        "--protocol",
        "aim-v1",
        "--probe",
        "linear",
    )
    for args in (("-b", "micro-cls,micro-patches", "-t", TASKS), ("-b", "micro-cls", "-t", "digits", "--seed", "1")):
        proc = run_cli("eval", *args, *common)
        assert proc.returncode == 0, proc.stderr
    runs = root / "results" / "runs"
    old = read_record(next(runs.glob("micro-patches__digits__*.json")))  # the same cell as recorded before per-example outputs
    for field in ("predictions", "interval", "best_test_interval", "last_test_interval"):
        old.pop(field, None)
    for layer in old["layers"]:
        layer.pop("test_interval", None)
    old.update(backbone="micro-old", cell_key=old["cell_key"].replace("micro-patches", "micro-old"), record_id="0" * 32)
    write_record_atomic(runs / "micro-old__digits.json", old)
    return root / "results"


def cli(results: Path, *args: str) -> str:
    proc = run_cli("report", "--results", str(results), *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _record(results: Path, backbone: str, task: str, seed: int = 0) -> tuple[dict, Path]:
    path = next(p for p in (results / "runs").glob(f"{backbone}__{task}__*seed{seed}*.json"))
    return read_record(path), path


def test_compare_gives_the_paired_difference_per_task_and_over_the_suite(results: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(cli(results, "compare", "micro-cls", "micro-patches", "-t", TASKS, "-f", "csv"))))
    by_task = {r["task"]: r for r in rows}
    assert list(by_task) == ["digits", "digits-mpc", "suite mean"]
    for task, method in (("digits", "exact McNemar"), ("digits-mpc", "paired bootstrap")):
        a, _ = _record(results, "micro-cls", task)
        b, _ = _record(results, "micro-patches", task)
        row = by_task[task]
        assert row["p_method"] == method and int(row["n_test"]) == a["n_test"] == 120
        assert float(row["difference"]) == pytest.approx(a["best_test_score"] - b["best_test_score"])  # the records' own scores
        assert float(row["low"]) <= float(row["difference"]) <= float(row["high"])
        assert float(row["p_value"]) <= float(row["p_holm"]) <= 1.0
    suite = by_task["suite mean"]
    assert float(suite["difference"]) == pytest.approx(
        (float(by_task["digits"]["difference"]) + float(by_task["digits-mpc"]["difference"])) / 2
    )
    text = cli(results, "compare", "micro-cls", "micro-patches", "-t", TASKS)
    assert "Holm" in text and "suite mean (2 tasks)" in text and "exact McNemar" in text


def test_mcnemar_counts_the_examples_the_two_backbones_disagree_on(results: Path) -> None:
    from scipy.stats import binomtest

    (a, path_a), (b, path_b) = _record(results, "micro-cls", "digits"), _record(results, "micro-patches", "digits")
    pa, pb = read_predictions(a, path_a), read_predictions(b, path_b)
    assert pa is not None and pb is not None and (pa.example_ids == pb.example_ids).all()
    right_a = pa.by_layer_set[a["best_layer_set"]] == pa.labels
    right_b = pb.by_layer_set[b["best_layer_set"]] == pb.labels
    only_a, only_b = int(np.sum(right_a & ~right_b)), int(np.sum(~right_a & right_b))
    expected = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    row = next(csv.DictReader(io.StringIO(cli(results, "compare", "micro-cls", "micro-patches", "-t", "digits", "-f", "csv"))))
    assert float(row["p_value"]) == pytest.approx(expected)


def test_a_side_without_outputs_and_unknown_names(results: Path) -> None:
    text = cli(results, "compare", "micro-cls", "micro-old", "-t", "digits")
    assert "no per-example outputs (re-run with this version)" in text
    assert_one_line_error(
        run_cli("report", "--results", str(results), "compare", "micro-cl", "micro-patches"), "micro-cl", "close: micro-cls"
    )
    assert_one_line_error(run_cli("report", "--results", str(results), "compare", "micro-cls"), "name two backbones")


def test_the_leaderboard_shows_stored_intervals_seed_intervals_and_old_records_as_unavailable(results: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(cli(results, "-t", "digits", "-f", "csv"))))
    by_backbone = {r["backbone"]: r for r in rows}
    patches, _ = _record(results, "micro-patches", "digits")
    best = next(layer for layer in patches["layers"] if layer["layer_set"] == patches["best_layer_set"])
    row = by_backbone["micro-patches"]
    assert float(row["best_test_low"]) == pytest.approx(best["test_interval"]["low"]) and row["n_test"] == "120"
    assert float(row["best_test_high"]) == pytest.approx(best["test_interval"]["high"])
    two = by_backbone["micro-cls"]  # seeds 0 and 1: one interval over seeds and examples, from the sidecars
    assert two["seeds"] == "2" and two["best_interval_seeds"] == "2"
    assert float(two["best_test_low"]) <= float(two["best_test_score"]) <= float(two["best_test_high"])
    assert by_backbone["micro-old"]["best_test_low"] == ""
    table = cli(results, "-t", "digits", "-f", "markdown")
    half = max(best["test_score"] - best["test_interval"]["low"], best["test_interval"]["high"] - best["test_score"])
    assert f"{100 * best['test_score']:.1f} ±{100 * half:.1f}" in table
    assert " ×2" in table and "±?" in table and "share a rank" in table
    latex = cli(results, "-t", "digits", "-f", "latex")
    assert r"\,{\scriptsize$\pm$" in latex


def test_layers_and_exports_carry_intervals_and_n_test(results: Path, tmp_path: Path) -> None:
    points = list(csv.DictReader(io.StringIO(cli(results, "layers", "-b", "micro-patches", "-t", "digits", "-f", "csv"))))
    assert [p["n_test"] for p in points] == ["120"] * 3 and all(p["test_low"] and p["tied_with_best"] in ("True", "False") for p in points)
    assert sum(p["tied_with_best"] == "True" for p in points) <= 2  # the best itself is never listed as tied
    proc = run_cli("export", "--results", str(results), "--format", "parquet", "--out", str(tmp_path / "tables"))
    assert proc.returncode == 0, proc.stderr
    columns = [c[0] for c in duckdb.sql(f"DESCRIBE SELECT * FROM '{tmp_path / 'tables' / 'layer_metrics.parquet'}'").fetchall()]
    assert {"n_test", "test_low", "test_high"} <= set(columns)
    cli(results, "layers", "-t", "digits", "--plots", str(tmp_path / "plots"), "--depth", "relative")
    assert (tmp_path / "plots" / "layers_digits_linear.png").stat().st_size > 0
    detail = cli(results, "cell", "micro-patches|digits|linear|0")
    assert "bootstrap-percentile" in detail and "test intervals" in detail


def test_the_interval_over_seeds_resamples_both_seeds_and_is_cached(results: Path, tmp_path: Path) -> None:
    from aimbench.stats.intervals import score_interval

    seeds = [_record(results, "micro-cls", "digits", seed) for seed in (0, 1)]
    outputs = [read_predictions(record, path) for record, path in seeds]
    assert all(o is not None for o in outputs)
    stacked = np.stack([o.by_layer_set[record["best_layer_set"]] for o, (record, _) in zip(outputs, seeds)])  # type: ignore[union-attr]
    expected = score_interval(stacked, outputs[0].labels, "top1", 10)  # type: ignore[union-attr]
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    for _ in range(2):  # the second report reads no sidecar: the interval comes from the cache
        row = next(r for r in csv.DictReader(io.StringIO(cli(copy, "-t", "digits", "-f", "csv"))) if r["backbone"] == "micro-cls")
        assert (float(row["best_test_low"]), float(row["best_test_high"])) == pytest.approx((expected.low, expected.high))
        for sidecar in (copy / "runs").glob("*.predictions.safetensors"):
            sidecar.unlink()
