"""Nothing escapes its folder: card paths, archives, ``report --sql``, stale ``.part`` files, huge images.

Each user-facing case runs through the real CLI and must fail in one ``error:`` line with exit 2,
leaving nothing written outside the folders it may write.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import struct
import subprocess
import sys
import tarfile
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_BACKBONE_CARD, run_cli, write_card
from PIL import Image
from test_cli import assert_one_line_error
from test_cli_tasks import assert_task_failed

from aimbench.atomic import STALE_PART_AGE_S, atomic_write, sweep_stale_parts
from aimbench.cards.registry import Registry
from aimbench.data.check import BROKEN, check_task
from aimbench.data.images import MAX_PIXELS_ENV, ImageTooLarge
from aimbench.data.source_base import open_image
from aimbench.store.records import record_path, write_record_atomic

ONLINE = {"HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"}  # prepare fetches only when not offline


def task_card(source: str, name: str = "evil", sizes: tuple[int, int, int] = (2, 2, 2)) -> str:
    """A two-class task with one source; val is half of train."""
    train, val, test = sizes
    return f"""name = "{name}"
version = 1
num_classes = 2
metric = "top1"
license = "CC0-1.0"
splits = {{ train = "train", test = "test", val = {{ fraction = 0.5, seed = 0 }} }}
expected_sizes = {{ train = {train}, val = {val}, test = {test} }}

[[sources]]
{source}
"""


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")} if folder.exists() else set()


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A folder outside the data root that a card tries to reach; it must come through unchanged."""
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    return folder


def assert_untouched(victim: Path) -> None:
    assert sorted(p.name for p in victim.rglob("*")) == ["precious.txt"]
    assert (victim / "precious.txt").read_text() == "keep me"


# ---------------------------------------------------------------------------------------------
# card paths


@pytest.mark.parametrize(("source", "field"), [
    ('kind = "imagefolder"\ndir = "../victim"', "sources[0].dir"),
    ('kind = "imagefolder"\ndir = "{victim}"', "sources[0].dir"),
    ('kind = "imagefolder"\ndir = "ok/../../victim"', "sources[0].dir"),
    ('kind = "imagefolder"\ndir = "."', "sources[0].dir"),
    ('kind = "list"\ndir = "x"\nlists = {{ train = "../../victim/precious.txt" }}\nimage = "{{0}}"', "sources[0].lists.train"),
    ('kind = "list"\ndir = "x"\nlists = {{ train = "t.txt" }}\nimage = "../../victim/{{0}}"', "sources[0].image"),
    ('kind = "list"\ndir = "x"\nlists = {{ train = "t.txt" }}\nimage = "{{0}}"\nclasses_file = "{victim}/precious.txt"', "sources[0].classes_file"),
    ('kind = "coco_json"\ndir = "x"\nannotations = {{ train = "../../victim/a.json" }}', "sources[0].annotations.train"),
    ('kind = "idx"\ndir = "x"\nprefixes = {{ train = "../../victim/t" }}', "sources[0].prefixes.train"),
    ('kind = "idx"\ndir = "x"\nfallback_dirs = ["relative/dir"]\nprefixes = {{ train = "t" }}', "sources[0].fallback_dirs"),
    ('kind = "hf"\nid = "../../victim"\nrevision = "main"\nimage_column = "i"\nlabel_column = "l"', "sources[0].id"),
    ('kind = "hf"\nid = "a/b"\nrevision = "main"\nimage_column = "i"\nlabel_column = "l"\ndata_files = {{ train = "../*" }}',
     "sources[0].data_files.train"),
])  # fmt: skip
def test_a_task_card_path_leading_out_of_its_root_is_refused_at_load(tmp_path: Path, victim: Path, source: str, field: str) -> None:
    card = write_card(tmp_path / "cards", "tasks", "evil", task_card(source.format(victim=victim)))
    data = tmp_path / "data"
    proc = run_cli("tasks", "prepare", "evil", "--cards", str(tmp_path / "cards"), "--data-root", str(data), env=ONLINE)
    assert_one_line_error(proc, str(card), f"field '{field}'")
    assert_untouched(victim)
    assert not data.exists()


def test_shipped_cards_keep_their_system_fallback_folder() -> None:
    fashion = Registry.load().task("fashion-mnist")
    assert fashion.sources[0].options["fallback_dirs"] == ("/usr/share/datasets/fashion-mnist",)


def test_prepare_never_writes_through_a_link_leading_out_of_the_data_root(tmp_path: Path, victim: Path) -> None:
    source = 'kind = "imagefolder"\ndir = "linked"\ndownloads = [{ url = "http://127.0.0.1:9/x.tar", md5 = "' + "0" * 32 + '" }]'
    write_card(tmp_path / "cards", "tasks", "evil", task_card(source))
    data = tmp_path / "data"
    data.mkdir()
    (data / "linked").symlink_to(victim)
    proc = run_cli("tasks", "prepare", "evil", "--cards", str(tmp_path / "cards"), "--data-root", str(data), env=ONLINE)
    assert_task_failed(proc, "outside the data root")
    assert_untouched(victim)
    assert sorted(p.name for p in data.iterdir()) == ["linked"]


@pytest.mark.parametrize("weights", ["../../outside.pth", "../weights/link.pth"])
def test_backbone_weights_relative_to_the_card_stay_in_its_directory(tmp_path: Path, weights: str) -> None:
    cards = tmp_path / "cards"
    (tmp_path / "outside.pth").write_bytes(b"x")
    (cards / "weights").mkdir(parents=True)
    (cards / "weights" / "link.pth").symlink_to(tmp_path / "outside.pth")  # a link leading out counts as out
    card = write_card(cards, "backbones", "testfam", TINY_BACKBONE_CARD.replace('weights = "random"', f'weights = "{weights}"', 1))
    assert_one_line_error(
        run_cli("ls", "backbones", "--cards", str(cards)), str(card), "field 'variants.micro-cls.weights'", "absolute path"
    )


def test_backbone_weights_inside_the_card_directory_or_absolute_load(tmp_path: Path) -> None:
    cards = tmp_path / "cards"
    text = TINY_BACKBONE_CARD.replace('weights = "random"', 'weights = "../weights/micro.pth"', 1)
    write_card(cards, "backbones", "testfam", text.replace('weights = "random"', f'weights = "{tmp_path / "elsewhere.pth"}"', 1))
    specs = Registry.load([cards]).backbones
    assert specs["micro-cls"].weights == "../weights/micro.pth" and specs["micro-patches"].weights.startswith("/")


# ---------------------------------------------------------------------------------------------
# archives


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    folder = tmp_path / "www"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _tar(*members: tuple[str, bytes | str, Callable[[tarfile.TarInfo], None] | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content, shape in members:
            info = tarfile.TarInfo(name)
            data = content.encode() if isinstance(content, str) else content
            info.size = len(data)
            if shape is not None:
                shape(info)
                info.size = 0
            tar.addfile(info, io.BytesIO(data) if shape is None else None)
    return buffer.getvalue()


def _link(kind: bytes, target: str) -> Callable[[tarfile.TarInfo], None]:
    def shape(info: tarfile.TarInfo) -> None:
        info.type, info.linkname = kind, target

    return shape


def _zip(name: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("ok/fine.txt", "fine")
        zipped.writestr(name, "gotcha")
    return buffer.getvalue()


ARCHIVES = {
    "dotdot.tar": lambda v: _tar(("ok/fine.txt", "fine", None), ("../../escaped.txt", "gotcha", None)),
    "absolute-link.tar": lambda v: _tar(("link", "", _link(tarfile.SYMTYPE, str(v)))),
    "link-out.tar": lambda v: _tar(("link", "", _link(tarfile.SYMTYPE, "../../victim"))),
    "link-then-write.tar": lambda v: _tar(("d", "", _link(tarfile.SYMTYPE, "../..")), ("d/victim/escaped.txt", "gotcha", None)),
    "hardlink-out.tar": lambda v: _tar(("h", "", _link(tarfile.LNKTYPE, str(v / "precious.txt")))),
    "device.tar": lambda v: _tar(("dev", "", _link(tarfile.CHRTYPE, ""))),
    "dotdot.zip": lambda v: _zip("../../escaped.txt"),
    "absolute.zip": lambda v: _zip(str(v / "escaped.txt")),
}


@pytest.mark.parametrize("archive", sorted(ARCHIVES))
def test_an_archive_member_escaping_the_staging_folder_stops_prepare(tmp_path: Path, victim: Path, served, archive: str) -> None:
    www, base = served
    (www / archive).write_bytes(ARCHIVES[archive](victim))
    md5 = hashlib.md5((www / archive).read_bytes(), usedforsecurity=False).hexdigest()
    source = f'kind = "imagefolder"\ndir = "evil"\ndownloads = [{{ url = "{base}/{archive}", md5 = "{md5}" }}]'
    write_card(tmp_path / "cards", "tasks", "evil", task_card(source))
    data = tmp_path / "data"
    before = files_under(tmp_path) - files_under(data)
    proc = run_cli("tasks", "prepare", "evil", "--cards", str(tmp_path / "cards"), "--data-root", str(data), env=ONLINE)
    assert_task_failed(proc, "unsafe", archive)
    assert_untouched(victim)
    assert files_under(tmp_path) - files_under(data) - {data} == before  # nothing new outside the data root
    assert not (data / "evil").exists() and not any(p.name.endswith(".part") for p in files_under(data))


def test_a_zip_link_entry_is_unpacked_as_a_plain_file(tmp_path: Path) -> None:
    from aimbench.data.prepare import _unpack

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        info = zipfile.ZipInfo("link")
        info.external_attr = 0o120777 << 16  # a symbolic link, as Info-ZIP stores one
        zipped.writestr(info, "/etc/passwd")
    (tmp_path / "a.zip").write_bytes(buffer.getvalue())
    (tmp_path / "into").mkdir()
    _unpack(tmp_path / "a.zip", tmp_path / "into", 0)
    link = tmp_path / "into" / "link"
    assert not link.is_symlink() and link.read_text() == "/etc/passwd"


# ---------------------------------------------------------------------------------------------
# report --sql


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A results folder with one record, written the way eval writes one."""
    layer = {"layer_set": "0", "blocks": [0], "layer": 0, "token": "cls", "hparams": {"lr": 0.1}, "val_score": 0.5, "test_score": 0.4}
    record = {"schema_version": 2, "record_id": "a" * 32, "created_at": "2024-05-01T10:00:00.000000+00:00",
              "cell_key": "vit-a|digits|linear|0", "config_hash": "aaaaaaaa", "backbone": "vit-a", "task": "digits",
              "probe": "linear", "seed": 0, "image_limit": None, "metric": "top1", **{f"best_{k}": v for k, v in layer.items()},
              **{f"last_{k}": v for k, v in layer.items()}, "layers": [layer]}  # fmt: skip
    write_record_atomic(record_path(tmp_path / "results", "vit-a__digits__linear__0__aaaaaaaa.json"), record)
    return tmp_path / "results"


REFUSED = {
    "copy": "COPY (SELECT 1 AS a) TO '{out}/copied.csv'",
    "explain-analyze-copy": "EXPLAIN ANALYZE COPY (SELECT 1 AS a) TO '{out}/copied.csv'",
    "read_text": "SELECT * FROM read_text('/etc/passwd')",
    "read_csv": "SELECT * FROM read_csv('/etc/passwd')",
    "glob": "SELECT * FROM glob('/etc/*')",
    "cache-file": "SELECT count(*) FROM read_parquet('{results}/.cache/*.parquet')",
    "attach": "ATTACH '{out}/attached.db' AS other",
    "drop": "DROP VIEW runs",
    "create": "CREATE TABLE t AS SELECT 1 AS a",
    "insert": "INSERT INTO published SELECT * FROM published",
    "two statements": "SELECT 1; SELECT 2",
    "set": "SET enable_external_access = true",
    "select-then-set": "SELECT 1; SET enable_external_access = true",
    "pragma": "PRAGMA enable_profiling",
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_report_sql_refuses_anything_but_a_read_only_query(results: Path, tmp_path: Path, case: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    query = REFUSED[case].format(out=out, results=results)
    before = files_under(tmp_path)
    proc = run_cli("report", "--results", str(results), "--sql", query)
    assert_one_line_error(proc, "--sql")
    cache = results / ".cache"
    assert list(out.iterdir()) == [] and files_under(tmp_path) - files_under(cache) - {cache} == before  # nothing but the cache
    assert not [p for p in cache.iterdir() if p.name.endswith((".part", ".pin"))]


@pytest.mark.parametrize("query", [
    "SELECT backbone, best_test_score FROM latest", "FROM runs", "WITH x AS (SELECT 1 AS a) SELECT * FROM x", "DESCRIBE latest",
    "SHOW TABLES", "SUMMARIZE layer_metrics", "EXPLAIN SELECT * FROM runs", "SELECT count(*) FROM published;",
])  # fmt: skip
def test_report_sql_runs_read_only_queries_over_the_views(results: Path, query: str) -> None:
    proc = run_cli("report", "--results", str(results), "--sql", query, "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    assert not [p for p in (results / ".cache").iterdir() if p.name.endswith((".part", ".pin"))]  # the private copy is gone too


@pytest.mark.parametrize("unwritable", ["cache", "private copy"])
def test_report_sql_is_locked_when_the_rows_are_held_in_memory(results: Path, monkeypatch: pytest.MonkeyPatch, unwritable: str) -> None:
    """A results folder that takes no cache (rows in memory), or no private copy of it (rows copied into memory)."""
    import shutil

    import aimbench.store.cache as cache_module
    from aimbench.errors import UserError
    from aimbench.report.views import sql_view
    from aimbench.store.db import open_session

    def refuse(*_args: object) -> None:
        raise PermissionError("read-only file system")

    monkeypatch.setattr(*((cache_module.os, "replace") if unwritable == "cache" else (shutil, "copyfile")), refuse)
    session = open_session(results)
    assert (session.pinned is None) == (unwritable == "cache")
    table, _ = sql_view(session, "SELECT backbone, best_test_score FROM latest")
    assert table.rows == [["vit-a", "0.4"]]
    with pytest.raises(UserError, match="never files"):
        sql_view(session, "SELECT * FROM read_text('/etc/passwd')")


# ---------------------------------------------------------------------------------------------
# stale .part files


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _part(folder: Path, name: str, age_s: float) -> Path:
    path = folder / name
    path.write_bytes(b"partial")
    then = path.stat().st_mtime - age_s
    os.utime(path, (then, then))
    return path


def test_the_sweep_removes_only_old_parts_of_writers_that_are_gone(tmp_path: Path) -> None:
    dead, old = _dead_pid(), STALE_PART_AGE_S + 60
    stale = _part(tmp_path, f".record.json.{dead}.part", old)
    tagged = _part(tmp_path, f".records.parquet.{dead}-1a2b3c4d.part", old)
    live = _part(tmp_path, f".record.json.{os.getpid()}.part", old)
    fresh = _part(tmp_path, f".other.json.{dead}.part", 5)
    no_pid = _part(tmp_path, ".table.csv.part", old)
    finished = _part(tmp_path, f"record.json.{dead}.part.json", old)
    (tmp_path / f".staging.{dead}.part").mkdir()
    assert sorted(sweep_stale_parts(tmp_path)) == sorted([stale, tagged])
    assert all(p.exists() for p in (live, fresh, no_pid, finished, tmp_path / f".staging.{dead}.part"))


def test_the_first_write_into_a_folder_sweeps_it(tmp_path: Path) -> None:
    runs = tmp_path / "results" / "runs"
    runs.mkdir(parents=True)
    stale = _part(runs, f".cell.json.{_dead_pid()}.part", STALE_PART_AGE_S + 60)
    atomic_write(runs / "cell.json", lambda handle: handle.write(b"{}"))
    assert not stale.exists() and sorted(p.name for p in runs.iterdir()) == ["cell.json"]


def test_the_report_parses_records_inside_the_results_folder_not_tmp(results: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from aimbench.store.db import open_session

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a temporary file outside the results folder")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert open_session(results).records == 1
    assert not [p for p in (results / ".cache").iterdir() if p.name.endswith(".part")]


# ---------------------------------------------------------------------------------------------
# the pixel limit


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels in a few dozen bytes (its pixel data cut off)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
    )


def test_a_huge_declared_image_is_refused_from_its_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(13_000, 13_000))  # 169 million pixels: 507 MB of RGB, before any decode
    with pytest.raises(ImageTooLarge, match="169,000,000 pixels"):
        open_image(bomb)


def _imagefolder_task(tmp_path: Path, sizes: dict[str, list[int]]) -> tuple[object, Path]:
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for split, sides in sizes.items():
        for i, side in enumerate(sides):
            path = data / "tiny" / split / f"c{i % 2}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
    write_card(tmp_path / "cards", "tasks", "tiny", task_card('kind = "imagefolder"\ndir = "tiny"', "tiny", (4, 4, 2)))
    return Registry.load([tmp_path / "cards"]).task("tiny"), data


def test_images_over_a_configured_limit_are_skipped_and_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    task, data = _imagefolder_task(tmp_path, {"train": [4, 4, 4, 4, 12, 4, 4, 4], "test": [4, 12]})
    monkeypatch.setenv(MAX_PIXELS_ENV, "100")  # 4x4 = 16 pixels pass, 12x12 = 144 do not
    report = check_task(task, data)
    assert (report.too_large, report.unreadable, report.status) == (2, 0, BROKEN)
    assert any("over the pixel limit of 100" in note for note in report.notes)
    monkeypatch.setenv(MAX_PIXELS_ENV, "200")
    assert check_task(task, data).too_large == 0


def test_a_malformed_limit_is_one_error_line(tmp_path: Path) -> None:
    task_card_text = task_card('kind = "imagefolder"\ndir = "tiny"', "tiny")
    write_card(tmp_path / "cards", "tasks", "tiny", task_card_text)
    (tmp_path / "data" / "tiny" / "train" / "c0").mkdir(parents=True)
    proc = run_cli("tasks", "check", "tiny", "--cards", str(tmp_path / "cards"), "--data-root", str(tmp_path / "data"),
                   env={MAX_PIXELS_ENV: "lots"})  # fmt: skip
    assert_one_line_error(proc, MAX_PIXELS_ENV)


def test_pretraining_skips_and_counts_images_over_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aimbench.pretrain.data import PretrainBatches
    from aimbench.pretrain.sources import parse_data

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, side in enumerate([8, 8, 8, 40]):
        Image.new("RGB", (side, side), (i, 0, 0)).save(folder / f"{i}.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, "100")
    _, skipped = PretrainBatches(parse_data(str(folder)), image_size=8, batch_size=4, seed=0)[0]
    assert skipped >= 1
