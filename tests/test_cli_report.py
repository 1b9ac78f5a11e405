"""``aimbench report`` and ``aimbench export`` through the real CLI, on records of real eval runs."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import duckdb
import pytest
from conftest import TINY_BACKBONE_CARD, run_cli, write_card
from test_cli import FASHION, assert_one_line_error


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two micro backbones on digits (and Debian's Fashion-MNIST when installed), two seeds of one cell."""
    root = tmp_path_factory.mktemp("report")
    cards = root / "cards"
    write_card(cards, "backbones", "testfam", TINY_BACKBONE_CARD)
    tasks = "digits,fashion-mnist" if FASHION.is_dir() else "digits"
    common = ("--cards", str(cards), "--results", str(root / "results"), "--limit", "120", "--epochs", "5", "--protocol", "aim-v1")
    first = run_cli("eval", "-b", "micro-cls,micro-patches", "-t", tasks, "--probe", "linear", *common)
    assert first.returncode == 0, first.stderr
    second = run_cli("eval", "-b", "micro-cls", "-t", "digits", "--probe", "linear", "--seed", "1", *common)
    assert second.returncode == 0, second.stderr
    return root / "results"


def report(results: Path, *args: str) -> str:
    proc = run_cli("report", "--results", str(results), *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_leaderboard_in_every_format(results: Path) -> None:
    markdown = report(results, "--format", "markdown")
    assert (
        "| micro-cls | linear · limit 120 · protocol aim-v1+epochs=5 | best layer | " in markdown and "±" in markdown
    )  # two seeds of micro-cls on digits
    rows = list(csv.DictReader(io.StringIO(report(results, "--format", "csv"))))
    assert {(r["backbone"], r["task"]) for r in rows} >= {("micro-cls", "digits"), ("micro-patches", "digits")}
    assert [r["seeds"] for r in rows if r["backbone"] == "micro-cls" and r["task"] == "digits"] == ["2"]
    latex = report(results, "--format", "latex")
    assert latex.count(r"\toprule") == 1 and r"\textbf{" in latex and "\\bottomrule" in latex
    assert "aimbench leaderboard" in report(results)


def test_filters_and_the_papers_numbers(results: Path) -> None:
    only_cls = report(results, "--backbone", "micro-c*", "--format", "markdown")
    assert "micro-cls" in only_cls and "micro-patches" not in only_cls
    assert "AIM-7B" not in only_cls  # no paper has digits
    beside = report(results, "--task", "digits,imagenet-1k", "--format", "markdown")
    assert "| aim-7b | AIM-7B [paper] | last layer | 82.4 | – |" in beside  # imagenet-1k column first: the suite order
    assert "| micro-cls | linear · limit 120 · protocol aim-v1+epochs=5 |" in beside
    assert "AIM-7B" not in report(results, "--task", "digits,imagenet-1k", "--no-paper")
    smoke = report(results, "--suite", "smoke", "--format", "markdown")
    assert "| backbone | probe | layer | digits | fashion-mnist | mean | rank |" in smoke
    assert "micro-cls" in report(results, "--since", "1d")
    assert_one_line_error(run_cli("report", "--results", str(results), "--since", "2999-01-01"), "no records match the filters")
    assert_one_line_error(run_cli("report", "--results", str(results), "--suite", "aim16"), "unknown suite 'aim16'")


def test_layer_curves_plots_and_cell_detail(results: Path, tmp_path: Path) -> None:
    curves = report(results, "layers", "--task", "digits", "--plots", str(tmp_path / "plots"))
    assert "layer curves" in curves and "micro-patches" in curves
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["layers_digits_linear.png"]
    points = list(csv.DictReader(io.StringIO(report(results, "layers", "--format", "csv", "--backbone", "micro-cls", "--task", "digits"))))
    assert [int(p["block"]) for p in points] == [0, 1, 2] and sum(p["best"] == "True" for p in points) == 1
    detail = report(results, "cell", "micro-cls|digits|linear|1")
    assert "effective batch / lr" in detail and "sha256:" in detail and "micro-cls on digits — linear probe, seed 1" in detail
    assert_one_line_error(run_cli("report", "cell", "micro", "--results", str(results)), "matches")
    assert_one_line_error(run_cli("report", "cell", "--results", str(results)), "name the cell")


def test_sql_export_and_html(results: Path, tmp_path: Path) -> None:
    out = report(
        results, "--sql", "SELECT backbone, count(*) AS n FROM latest WHERE task = 'digits' GROUP BY ALL ORDER BY backbone", "-f", "csv"
    )
    assert list(csv.DictReader(io.StringIO(out))) == [{"backbone": "micro-cls", "n": "2"}, {"backbone": "micro-patches", "n": "1"}]
    assert_one_line_error(run_cli("report", "--results", str(results), "--sql", "SELEKT 1"), "--sql failed")
    proc = run_cli("export", "--results", str(results), "--format", "parquet", "--out", str(tmp_path / "tables"))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == [
        "latest.parquet",
        "layer_metrics.parquet",
        "published.parquet",
        "runs.parquet",
    ]
    runs = len(list((results / "runs").glob("*.json")))
    assert duckdb.sql(f"SELECT count(*) FROM '{tmp_path / 'tables' / 'runs.parquet'}'").fetchall() == [(runs,)]
    assert run_cli("export", "--results", str(results), "--format", "csv", "--out", str(tmp_path / "csv")).returncode == 0
    with (tmp_path / "csv" / "published.csv").open() as handle:
        assert sum(1 for _ in csv.DictReader(handle)) == 173  # Table 6 (11 x 15) and Table 7 (4 x 2)
    report(results, "--html", str(tmp_path / "site"))
    page = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "micro-cls" in page and "data:image/png;base64," in page and "http" not in page.replace("http-equiv", "")


def test_a_record_broken_by_hand_is_one_line(results: Path, tmp_path: Path) -> None:
    copy = tmp_path / "results"
    (copy / "runs").mkdir(parents=True)
    for path in (results / "runs").glob("*.json"):
        (copy / "runs" / path.name).write_text(path.read_text())
    broken = copy / "runs" / "zz.json"
    broken.write_text(json.dumps({"schema_version": 2})[:-3])
    assert_one_line_error(run_cli("report", "--results", str(copy)), str(broken), "not valid JSON")


def test_format_choices_follow_the_renderers_and_exporters() -> None:
    """The CLI spells out its --format enums (so mypy sees their members); they must match what is rendered and exported."""
    from aimbench.cli.report import ExportFormat, ReportFormat
    from aimbench.report import FORMATS
    from aimbench.report.views import EXPORT_FORMATS

    assert tuple(f.value for f in ReportFormat) == FORMATS
    assert tuple(f.value for f in ExportFormat) == EXPORT_FORMATS
