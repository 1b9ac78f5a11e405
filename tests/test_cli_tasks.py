"""``aimbench tasks check|prepare`` and the data pre-flight of ``eval``, through the real CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import REPO, run_cli, write_card
from test_cli import assert_one_line_error

from aimbench.cards.registry import Registry

AIM15 = Registry.load().suites()["aim15"]


def assert_task_failed(proc: subprocess.CompletedProcess, *fragments: str, task: str = "evil") -> None:
    """``tasks prepare`` ended with ``task`` failed: exit 1, its row in the table, and its reason as one
    ``error: <task>: ...`` line on stderr holding every fragment; no traceback."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    rows = [[cell.strip() for cell in line.split("│")[1:3]] for line in proc.stdout.splitlines() if line.startswith("│")]
    assert [task, "failed"] in rows, proc.stdout
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith(f"error: {task}: ")]
    for fragment in fragments:
        assert fragment in line, line


def test_check_all_on_an_empty_data_root_reports_every_task_missing(tmp_path: Path) -> None:
    proc = run_cli("tasks", "check", "all", "--data-root", str(tmp_path / "empty"))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "0 of 15 tasks ready" in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == AIM15  # the paper's order
    assert all(row.split("│")[2].strip() == "missing" for row in rows)
    assert "imagenet-1k: task 'imagenet-1k' has no local copy" in proc.stdout


def test_check_a_miniature_copy_is_ready_and_eval_runs_on_it(tmp_path: Path, tiny_cards: Path) -> None:
    import sys

    sys.path.insert(0, str(REPO / "tests" / "data"))
    from miniature import miniature_card, write_miniature

    task = Registry.load().task("dtd")
    sizes = write_miniature(task, tmp_path / "data", classes=3)
    write_card(tiny_cards, "tasks", "dtd", miniature_card(task, 3, sizes))
    common = ("--cards", str(tiny_cards), "--data-root", str(tmp_path / "data"))
    proc = run_cli("tasks", "check", "dtd", *common)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 of 1 tasks ready" in proc.stdout and f"list:{tmp_path / 'data' / 'dtd'}" in proc.stdout
    listing = run_cli("ls", "tasks", "dtd", *common)
    assert "ready (list)" in listing.stdout
    proc = run_cli(
        "eval",
        "-b",
        "micro-cls",
        "-t",
        "dtd",
        "--layers",
        "last",
        "--epochs",
        "1",
        "--protocol",
        "aim-v1",
        "--results",
        str(tmp_path / "r"),
        *common,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "r" / "runs").glob("*.json"))) == 1


def test_prepare_offline_fetches_nothing_and_exits_1(tmp_path: Path) -> None:
    proc = run_cli("tasks", "prepare", "cifar10", "dtd", "--data-root", str(tmp_path / "data"))
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.count("offline") >= 2 and "unset HF_HUB_OFFLINE" in proc.stdout
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.parquet"))


def test_eval_of_a_task_without_data_fails_before_loading_any_backbone(tmp_path: Path) -> None:
    """The weights file does not exist either: the error must be about the data, found first."""
    proc = run_cli(
        "eval", "-b", "vit-tiny-cls", "-t", "cifar10,dtd", "--weights", str(tmp_path / "absent.safetensors"),
        "--data-root", str(tmp_path / "data"), "--results", str(tmp_path / "results"),
    )  # fmt: skip
    assert_one_line_error(proc, "task 'cifar10' has no local copy", "task 'dtd' has no local copy", "aimbench tasks prepare dtd")
    assert "absent.safetensors" not in proc.stderr
    assert not (tmp_path / "results" / "runs").exists() or not any((tmp_path / "results" / "runs").iterdir())


def test_unknown_task_in_tasks_check_suggests_close_names(tmp_path: Path) -> None:
    proc = run_cli("tasks", "check", "cifar-10", "--data-root", str(tmp_path))
    assert_one_line_error(proc, "unknown task 'cifar-10'", "cifar10")


def test_prepare_three_tasks_one_failing_prints_every_row_and_exits_1(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(REPO / "tests" / "data"))
    from flaky_server import Plan, flaky_server
    from test_prepare import dtd_card, dtd_like_tarball, md5

    dtd_like_tarball(tmp_path / "dtd.tar.gz")
    archive = (tmp_path / "dtd.tar.gz").read_bytes()
    with flaky_server() as server:
        url = server.serve("dtd.tar.gz", Plan(archive))
        for name in ("first", "broken", "last"):
            card = dtd_card(url if name != "broken" else f"{server.base}/gone.tar.gz", md5(tmp_path / "dtd.tar.gz"))
            write_card(tmp_path / "cards", "tasks", name, card.replace('"tiny-dtd"', f'"{name}"').replace('dir = "dtd"', f'dir = "{name}"'))
        proc = run_cli("tasks", "prepare", "first", "broken", "last", "--cards", str(tmp_path / "cards"), "--data-root",
                       str(tmp_path / "data"), env={"HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"})  # fmt: skip
    print(proc.stdout + proc.stderr)  # the summary, for the record (pytest -s)
    assert_task_failed(proc, f"{server.base}/gone.tar.gz", "HTTP 404", "update the card's URL", "ask the lab for a copy", task="broken")
    rows = [[cell.strip() for cell in line.split("│")[1:3]] for line in proc.stdout.splitlines() if line.startswith("│")]
    assert [row for row in rows if row[0]] == [["first", "prepared"], ["broken", "failed"], ["last", "prepared"]]
    assert "2 of 3 tasks ready" in proc.stdout
