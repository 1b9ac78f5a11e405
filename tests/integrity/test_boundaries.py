"""Every failure at a boundary is one line naming the file: a catalogue of damaged inputs.

Each case runs the real ``aimbench`` command on input that some library below aimbench (PIL, the
file system, json, torch) cannot take, and must end in one ``error: ...`` line naming the file
(exit 2, no traceback) with nothing half-written. Faults the operating system would cause only
mid-run (a folder turning read-only) are injected into the CLI's own process at ``os.replace``.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_BACKBONE_CARD, run_cli, write_card
from PIL import Image
from test_cli import assert_one_line_error
from test_confinement import files_under, task_card

EVAL = ("eval", "-b", "micro-cls", "--protocol", "aim-v1", "--epochs", "2", "--limit", "60", "--device", "cpu")


def run_patched(patch: str, *args: str, tmp: Path) -> subprocess.CompletedProcess:
    """The CLI with ``patch`` (Python) run first in its own process: a fault the OS raises mid-run."""
    code = f"import sys; {patch}; from aimbench.cli import main; sys.argv = ['aimbench', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp)})  # fmt: skip


@pytest.fixture
def folder_task(tmp_path: Path, tiny_cards: Path) -> Path:
    """A two-class image-folder task ``folder`` under ``tmp_path/data``: 8 train and 2 test images per class."""
    write_card(tiny_cards, "tasks", "folder", task_card('kind = "imagefolder"\ndir = "folder"', name="folder", sizes=(8, 8, 4)))
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("test", 2)):
        for name in ("a", "b"):
            folder = tmp_path / "data" / "folder" / split / name
            folder.mkdir(parents=True)
            for k in range(count):
                Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(folder / f"{k}.png")
    return tmp_path / "data" / "folder"


def eval_folder(tmp_path: Path, cards: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_cli(*EVAL, "-t", "folder", "--cards", str(cards), "--data-root", str(tmp_path / "data"),
                   "--results", str(tmp_path / "results"), *extra)  # fmt: skip


# ---- writes the file system refuses mid-run ----


@pytest.mark.parametrize("code", ["EACCES", "EPERM", "EROFS"])
def test_a_results_folder_turning_unwritable_keeps_the_finished_record_where_the_message_says(
    tmp_path: Path, tiny_cards: Path, code: str
) -> None:
    refuse = ("import errno, os; real = os.replace\n"
              "def replace(src, dst, *a, **k):\n"
              f"    if '/runs/' in str(dst): raise OSError(errno.{code}, os.strerror(errno.{code}), str(dst))\n"
              "    return real(src, dst, *a, **k)\n"
              "os.replace = replace")  # fmt: skip
    results = tmp_path / "results"
    proc = run_patched(f"exec({refuse!r})", *EVAL, "-t", "digits", "--cards", str(tiny_cards), "--results", str(results), tmp=tmp_path)
    assert_one_line_error(proc, f"cannot write {results / 'runs'}", "the finished result is kept in", f"move them to {results / 'runs'}")
    folder, names = proc.stderr.split("kept in ")[1].split(": move them")[0].rstrip(")").split(" (")
    assert Path(folder) == tmp_path / "aimbench-rescued"
    record_name, sidecar_name = names.split(", ")  # the record and its per-example predictions, kept together
    record = json.loads((Path(folder) / record_name).read_text())
    assert record["predictions"]["file"] == sidecar_name
    assert hashlib.sha256((Path(folder) / sidecar_name).read_bytes()).hexdigest() == record["predictions"]["sha256"]
    assert not [p for p in files_under(results) if p.suffix in (".json", ".part", ".safetensors")]


def test_a_features_output_folder_turning_unwritable_is_one_line(tmp_path: Path, tiny_cards: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 16, 3), i * 40, np.uint8)).save(images / f"{i}.png")
    out = tmp_path / "out" / "f.safetensors"
    refuse = ("import errno, os; real = os.replace\n"
              "def replace(src, dst, *a, **k):\n"
              "    if str(dst).endswith('f.safetensors'): raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(dst))\n"
              "    return real(src, dst, *a, **k)\n"
              "os.replace = replace")  # fmt: skip
    proc = run_patched(
        f"exec({refuse!r})", "features", "micro-cls", "-i", str(images), "-o", str(out), "--cards", str(tiny_cards), tmp=tmp_path
    )
    assert_one_line_error(proc, f"cannot write {out}", "nothing was written", f"make {out.parent} writable")
    assert not [p for p in files_under(out.parent)]


# ---- images PIL cannot take ----


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


@pytest.mark.parametrize(
    "damage",
    [lambda p: p.write_bytes(b""), _truncate, lambda p: p.write_text("hello, I am text\n")],
    ids=["zero-byte", "truncated", "text-as-png"],
)
def test_a_damaged_image_in_eval_is_one_line_naming_it(tmp_path: Path, tiny_cards: Path, folder_task: Path, damage) -> None:
    bad = folder_task / "train" / "a" / "1.png"
    damage(bad)
    proc = eval_folder(tmp_path, tiny_cards)
    assert_one_line_error(proc, f"cannot decode image {bad}", "replace or remove it")
    assert not (tmp_path / "results" / "runs").exists() or not list((tmp_path / "results" / "runs").iterdir())


def test_a_damaged_image_decoded_in_a_worker_process_is_the_same_one_line(tmp_path: Path, tiny_cards: Path, folder_task: Path) -> None:
    bad = folder_task / "test" / "b" / "0.png"
    bad.write_bytes(b"")
    assert_one_line_error(eval_folder(tmp_path, tiny_cards, "--workers", "1"), f"cannot decode image {bad}", "replace or remove it")


def test_a_200_megapixel_png_given_to_features_is_refused_before_decoding(tmp_path: Path, tiny_cards: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    Image.new("L", (20_000, 10_000)).save(images / "huge.png", optimize=True)  # a small file declaring 200 Mpx
    out = tmp_path / "f.safetensors"
    proc = run_cli("features", "micro-cls", "-i", str(images), "-o", str(out), "--cards", str(tiny_cards))
    assert_one_line_error(proc, str(images / "huge.png"), "200000000 pixels")
    assert not out.exists()


def test_a_binary_list_given_to_features_is_one_line_naming_it(tmp_path: Path, tiny_cards: Path) -> None:
    listing = tmp_path / "images.txt"
    listing.write_bytes(bytes(range(256)) * 4)
    out = tmp_path / "f.safetensors"
    proc = run_cli("features", "micro-cls", "-i", str(listing), "-o", str(out), "--cards", str(tiny_cards))
    assert_one_line_error(proc, str(listing))
    assert not out.exists()


# ---- folders: hidden entries, links that loop, special files ----


def test_a_hidden_folder_is_not_a_class(tmp_path: Path, tiny_cards: Path, folder_task: Path) -> None:
    stray = folder_task / "train" / ".ipynb_checkpoints"
    stray.mkdir()
    (stray / "0-checkpoint.png").write_bytes((folder_task / "train" / "a" / "0.png").read_bytes())
    proc = eval_folder(tmp_path, tiny_cards)
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "results" / "runs").glob("*.json"))) == 1


@pytest.mark.parametrize("where", ["train/a/loop.png", "train/loop"])
def test_a_link_that_loops_in_the_data_is_one_line_naming_it(tmp_path: Path, tiny_cards: Path, folder_task: Path, where: str) -> None:
    link = folder_task / where
    link.symlink_to(link.name)  # points at itself
    assert_one_line_error(eval_folder(tmp_path, tiny_cards), str(link), "remove or fix it")
    assert not (tmp_path / "results" / "runs").exists()


def test_a_fifo_among_the_images_is_refused_without_hanging(tmp_path: Path, tiny_cards: Path, folder_task: Path) -> None:
    os.mkfifo(folder_task / "test" / "b" / "pipe.png")
    assert_one_line_error(eval_folder(tmp_path, tiny_cards), str(folder_task / "test" / "b" / "pipe.png"), "a FIFO")


def test_a_list_file_that_is_a_fifo_is_refused_without_hanging(tmp_path: Path, tiny_cards: Path, folder_task: Path) -> None:
    listing = 'kind = "list"\ndir = "folder"\nlists = { train = "train.txt", test = "test.txt" }\nimage = "{0}"\nlabel_field = 1'
    write_card(tiny_cards, "tasks", "listed", task_card(listing, name="listed", sizes=(8, 8, 4)))
    (folder_task / "train.txt").write_text("".join(f"train/a/{k}.png 1\n" for k in range(8)))
    os.mkfifo(folder_task / "test.txt")
    proc = run_cli(*EVAL, "-t", "listed", "--cards", str(tiny_cards), "--data-root", str(tmp_path / "data"),
                   "--results", str(tmp_path / "results"), timeout=120)  # fmt: skip
    assert_one_line_error(proc, str(folder_task / "test.txt"), "a FIFO")


@pytest.mark.parametrize("kind", ["a socket", "a character device"])
def test_a_socket_or_device_among_the_images_is_refused(
    tmp_path: Path, tiny_cards: Path, folder_task: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    odd = folder_task / "test" / "b" / "odd.png"
    if kind == "a socket":
        monkeypatch.chdir(odd.parent)  # a relative name: a socket's path is limited to 108 bytes
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(odd.name)
    else:
        odd.symlink_to("/dev/null")
    assert_one_line_error(eval_folder(tmp_path, tiny_cards), str(odd), f"is {kind}", "remove it")
    assert not (tmp_path / "results" / "runs").exists()


@pytest.mark.parametrize("name", ["features.txt", "image.png"])
def test_a_fifo_given_to_features_is_refused_without_hanging(tmp_path: Path, tiny_cards: Path, name: str) -> None:
    os.mkfifo(tmp_path / name)
    proc = run_cli("features", "micro-cls", "-i", str(tmp_path / name), "-o", str(tmp_path / "f.safetensors"),
                   "--cards", str(tiny_cards), timeout=120)  # fmt: skip
    assert_one_line_error(proc, str(tmp_path / name), "a FIFO")


def test_a_card_that_is_a_fifo_is_refused_without_hanging(tmp_path: Path, tiny_cards: Path) -> None:
    os.mkfifo(tiny_cards / "backbones" / "pipe.toml")
    assert_one_line_error(run_cli("ls", "backbones", "--cards", str(tiny_cards), timeout=120), str(tiny_cards / "backbones" / "pipe.toml"))


# ---- records and submission files ----


@pytest.fixture(scope="module")
def one_record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results folder holding one real record of micro-cls on digits."""

    root = tmp_path_factory.mktemp("one-record")
    cards = root / "cards"
    write_card(cards, "backbones", "testfam", TINY_BACKBONE_CARD)
    proc = run_cli(*EVAL, "-t", "digits", "--cards", str(cards), "--results", str(root / "results"))
    assert proc.returncode == 0, proc.stderr
    return root / "results"


def _results_copy(one_record: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(one_record / "runs", tmp_path / "results" / "runs")).parent


def test_a_record_without_backbone_is_left_out_of_reports_with_a_warning_naming_it(one_record: Path, tmp_path: Path) -> None:
    from aimbench.store.records import read_record, record_text

    results = _results_copy(one_record, tmp_path)
    (good,) = (results / "runs").glob("*.json")
    record = read_record(good)
    del record["backbone"]
    bad = results / "runs" / "zz-no-backbone.json"
    bad.write_text(record_text(record))
    proc = run_cli("report", "--results", str(results), "--format", "csv")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines() == [f"warning: run record {bad} lacks one of record_id, created_at, cell_key, backbone, task, "
                                        "probe, seed, metric; left out: delete it, or re-run its cell"]  # fmt: skip
    assert "micro-cls" in proc.stdout


def test_a_record_holding_a_score_outside_its_range_is_left_out_of_reports_with_a_warning(one_record: Path, tmp_path: Path) -> None:
    from aimbench.store.records import read_record, record_text

    results = _results_copy(one_record, tmp_path)
    (good,) = (results / "runs").glob("*.json")
    record = read_record(good)
    record["best_test_score"] = 1.5  # written by another tool: sealed, but no measurement
    bad = results / "runs" / "zz-out-of-range.json"
    bad.write_text(record_text(record))
    proc = run_cli("report", "--results", str(results), "--format", "csv")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines() == [
        f"warning: run record {bad} holds a score outside [0, 1] or not a number (best_test_score); left out"
    ]
    assert "1.5" not in proc.stdout and "micro-cls" in proc.stdout


def test_a_record_link_that_loops_is_one_line_naming_it(one_record: Path, tmp_path: Path) -> None:
    results = _results_copy(one_record, tmp_path)
    (results / "runs" / "loop.json").symlink_to("loop.json")
    assert_one_line_error(run_cli("report", "--results", str(results)), str(results / "runs" / "loop.json"), "remove or fix it")


@pytest.mark.parametrize(
    "content",
    [bytes(range(256)), b"[1, 2, 3]\n", b'{"submission": "x", "cells": [{"key": "a"}]}\n', b'{"submission": "x", "kind": "pretrain"}'],
    ids=["random-bytes", "a-list", "cells-without-fields", "pretrain-without-fields"],
)
def test_a_damaged_submission_file_is_one_line_naming_it(tmp_path: Path, content: bytes) -> None:
    jobs = tmp_path / "results" / "jobs"
    jobs.mkdir(parents=True)
    (jobs / "20260101-000000.json").write_bytes(content)
    assert_one_line_error(run_cli("jobs", "--results", str(tmp_path / "results")), str(jobs / "20260101-000000.json"), "delete it")


# ---- numbers beyond what their type holds ----


@pytest.mark.parametrize("seed", ["99999999999999999999999", "2147483648", "-1"])
def test_a_seed_beyond_the_record_range_is_refused_before_any_work(tmp_path: Path, tiny_cards: Path, seed: str) -> None:
    proc = run_cli(*EVAL, "-t", "digits", "--cards", str(tiny_cards), "--results", str(tmp_path / "results"), "--seed", seed)
    assert_one_line_error(proc, f"bad --seed {seed}", "from 0 to 2147483647")
    assert not (tmp_path / "results").exists()


def test_a_since_before_the_year_one_is_one_line(one_record: Path) -> None:
    assert_one_line_error(run_cli("report", "--results", str(one_record), "--since", "9999999999d"), "--since '9999999999d'")


@pytest.mark.parametrize("probe", ["linear", "attentive"])
def test_heads_beyond_the_memory_budget_are_refused_before_any_work(tmp_path: Path, tiny_cards: Path, probe: str) -> None:
    """The plan's own estimate refuses a cell whose heads cannot fit (here a budget far below even a
    micro backbone's grid) before any feature is extracted, instead of one huge allocation later."""
    results = tmp_path / "results"
    proc = run_cli(*EVAL, "-t", "digits", "--probe", probe, "--memory-gb", "0.01", "--cards", str(tiny_cards), "--results", str(results),
                   env={"AIMBENCH_CACHE": str(tmp_path / "cache")})  # fmt: skip
    assert_one_line_error(proc, "its heads need about", "more than --memory-gb (0.0107 GB)", "smaller grid")
    assert not (tmp_path / "cache").exists() and not list(results.rglob("*.json"))
