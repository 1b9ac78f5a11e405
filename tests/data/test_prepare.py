"""``tasks prepare``: downloads from a real HTTP server on localhost, checksums, unpacking, offline.

The archives are built by the test in the official layouts (DTD's tarball with its top folder,
Pets' two archives without one, a zip with a plain list file beside it), served by
``http.server`` on 127.0.0.1 and fetched through the task card's ``downloads``. A list of tasks
isolates a failing one, Ctrl-C leaves no layout, and free space is checked first. The transfer
itself (cuts, retries, resumes) is tested in ``test_download.py``.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import shutil
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import write_card
from miniature import save_image

from aimbench.cards.registry import Registry
from aimbench.cards.task_card import TaskSpec
from aimbench.data import load_task
from aimbench.data.prepare import (
    FAILED,
    INTERRUPTED,
    MANUAL,
    NOT_STARTED,
    OFFLINE,
    PREPARED,
    READY,
    EscapesDataRoot,
    prepare_task,
    prepare_tasks,
)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on localhost, and its base URL."""
    folder = tmp_path / "www"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def dtd_like_tarball(path: Path, classes: int = 3, per_split: int = 2) -> None:
    """``dtd/images/<class>/<file>`` and ``dtd/labels/{train,val,test}1.txt``, like dtd-r1.0.1.tar.gz."""
    staging = path.parent / "dtd-staging" / "dtd"
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        lines = []
        for c in range(classes):
            for k in range(per_split):
                name = f"class{c}/class{c}_{split}{k}.jpg"
                save_image(staging / "images" / name, c, rng)
                lines.append(name)
        (staging / "labels").mkdir(parents=True, exist_ok=True)
        (staging / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")
    with tarfile.open(path, "w:gz") as tar:
        tar.add(staging, arcname="dtd")


def dtd_card(url: str, checksum: str, classes: int = 3, size: int = 6) -> str:
    return f"""
name = "tiny-dtd"
version = 1
num_classes = {classes}
metric = "top1"
license = "CC0-1.0"

[[sources]]
kind = "list"
dir = "dtd"
lists = {{ train = "labels/train1.txt", val = "labels/val1.txt", test = "labels/test1.txt" }}
image = "images/{{0}}"
downloads = [{{ url = "{url}", md5 = "{checksum}", strip = 1 }}]
hint = "ask the lab for a copy"

[splits]
train = "train"
test = "test"
val = {{ split = "val" }}

[expected_sizes]
train = {size}
val = {size}
test = {size}
"""


def load(tmp_path: Path, name: str, text: str) -> TaskSpec:
    write_card(tmp_path / "cards", "tasks", name, text)
    return Registry.load([tmp_path / "cards"]).task(name)


def test_prepare_downloads_checks_md5_unpacks_and_the_task_loads(tmp_path: Path, served, online) -> None:
    www, base = served
    dtd_like_tarball(www / "dtd-r1.0.1.tar.gz")
    task = load(tmp_path, "tiny-dtd", dtd_card(f"{base}/dtd-r1.0.1.tar.gz", md5(www / "dtd-r1.0.1.tar.gz")))
    root = tmp_path / "data"
    outcome = prepare_task(task, root)
    assert outcome.status == PREPARED and outcome.detail == f"list:{root / 'dtd'}"
    assert (root / "dtd" / "labels" / "train1.txt").is_file()  # the archive's top folder was stripped
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []  # no archive, staging or download folder
    splits = load_task(task, root)
    assert splits.sizes() == {"train": 6, "val": 6, "test": 6}
    assert sorted(set(splits.train.labels.tolist())) == [0, 1, 2]
    assert prepare_task(task, root).status == READY  # a second run finds it and fetches nothing


def test_a_checksum_mismatch_fails_and_leaves_nothing(tmp_path: Path, served, online) -> None:
    www, base = served
    dtd_like_tarball(www / "dtd-r1.0.1.tar.gz")
    task = load(tmp_path, "tiny-dtd", dtd_card(f"{base}/dtd-r1.0.1.tar.gz", "0" * 32))
    root = tmp_path / "data"
    outcome = prepare_task(task, root)
    assert outcome.status == FAILED
    assert "md5 is " in outcome.detail and "the card publishes 00000000" in outcome.detail
    assert "ask the lab for a copy" in outcome.detail
    assert list(root.iterdir()) == []  # no layout, archive, .part file or empty download folder


def test_an_unreachable_url_fails_with_the_url(tmp_path: Path, served, online) -> None:
    _, base = served
    task = load(tmp_path, "tiny-dtd", dtd_card(f"{base}/missing.tar.gz", "0" * 32))
    outcome = prepare_task(task, tmp_path / "data")
    assert outcome.status == FAILED and f"{base}/missing.tar.gz" in outcome.detail
    assert list((tmp_path / "data").iterdir()) == []


def test_a_corrupt_archive_fails_and_leaves_no_layout(tmp_path: Path, served, online) -> None:
    www, base = served
    (www / "dtd-r1.0.1.tar.gz").write_bytes(b"this is not a tarball")
    task = load(tmp_path, "tiny-dtd", dtd_card(f"{base}/dtd-r1.0.1.tar.gz", md5(www / "dtd-r1.0.1.tar.gz")))
    outcome = prepare_task(task, tmp_path / "data")
    assert outcome.status == FAILED and "corrupt archive" in outcome.detail
    assert not (tmp_path / "data" / "dtd").exists()


def test_unsafe_archive_paths_are_refused(tmp_path: Path, served, online) -> None:
    www, base = served
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("../../escaped.txt", "gotcha")
    (www / "evil.zip").write_bytes(buffer.getvalue())
    task = load(tmp_path, "tiny-dtd", dtd_card(f"{base}/evil.zip", md5(www / "evil.zip")).replace("strip = 1", "strip = 0"))
    with pytest.raises(EscapesDataRoot, match="unsafe path"):  # not a failed source to fall back from: prepare stops
        prepare_task(task, tmp_path / "data")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path.parent / "escaped.txt").exists()


def test_zip_and_plain_list_files_unpack_side_by_side(tmp_path: Path, served, online) -> None:
    """DomainNet's layout: <domain>.zip holding <domain>/<class>/<image>, and list files beside it."""
    www, base = served
    rng = np.random.default_rng(1)
    lists = {"train": [], "test": []}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for split, count in (("train", 3), ("test", 2)):
            for c in range(2):
                for k in range(count):
                    name = f"infograph/cls{c}/infograph_{split}_{c}_{k}.png"
                    image = io.BytesIO()
                    from miniature import tiny_image

                    tiny_image(c, rng).save(image, format="PNG")
                    zipped.writestr(name, image.getvalue())
                    lists[split].append(f"{name} {c}")
    (www / "infograph.zip").write_bytes(buffer.getvalue())
    for split, lines in lists.items():
        (www / f"infograph_{split}.txt").write_text("\n".join(lines) + "\n")
    downloads = ", ".join(
        f'{{ url = "{base}/{n}", md5 = "{md5(www / n)}" }}' for n in ("infograph.zip", "infograph_train.txt", "infograph_test.txt")
    )
    card = f"""
name = "tiny-infograph"
version = 1
num_classes = 2
metric = "top1"
license = "CC0-1.0"

[[sources]]
kind = "list"
dir = "domainnet"
lists = {{ train = "infograph_train.txt", test = "infograph_test.txt" }}
image = "{{0}}"
label_field = 1
downloads = [{downloads}]

[splits]
train = "train"
test = "test"
val = {{ fraction = 0.5, seed = 0 }}

[expected_sizes]
train = 3
val = 3
test = 4
"""
    task = load(tmp_path, "tiny-infograph", card)
    assert prepare_task(task, tmp_path / "data").status == PREPARED
    splits = load_task(task, tmp_path / "data")
    assert splits.sizes() == {"train": 3, "val": 3, "test": 4}
    assert splits.test.labels.tolist() == [0, 0, 1, 1]


def test_offline_prepare_fetches_nothing_and_says_how(tmp_path: Path, served, no_network) -> None:
    _, base = served
    task = load(tmp_path, "tiny-dtd", dtd_card(f"{base}/dtd-r1.0.1.tar.gz", "0" * 32))
    outcome = prepare_task(task, tmp_path / "data")
    assert outcome.status == OFFLINE
    assert "unset HF_HUB_OFFLINE" in outcome.detail and "ask the lab for a copy" in outcome.detail


def test_gated_sources_print_the_manual_step(tmp_path: Path) -> None:
    card = dtd_card("https://example.invalid/x.tar.gz", "0" * 32).replace(
        'downloads = [{ url = "https://example.invalid/x.tar.gz", md5 = "00000000000000000000000000000000", strip = 1 }]\n', ""
    )
    task = load(tmp_path, "tiny-dtd", card)
    outcome = prepare_task(task, tmp_path / "data")
    assert outcome.status == MANUAL and outcome.detail == "ask the lab for a copy"


def three_tasks(tmp_path: Path, base: str, www: Path, broken: str = "b") -> list[TaskSpec]:
    """Cards a, b and c: DTD-like archives unpacking into folders a, b and c; ``broken``'s URL is a 404."""
    dtd_like_tarball(www / "dtd-r1.0.1.tar.gz")
    tasks = []
    for name in ("a", "b", "c"):
        url = f"{base}/{'missing' if name == broken else 'dtd-r1.0.1'}.tar.gz"
        text = dtd_card(url, md5(www / "dtd-r1.0.1.tar.gz")).replace('"tiny-dtd"', f'"{name}"').replace('dir = "dtd"', f'dir = "{name}"')
        tasks.append(load(tmp_path, name, text))
    return tasks


def test_a_failing_task_is_its_own_row_and_the_others_go_on(tmp_path: Path, served, online) -> None:
    www, base = served
    outcomes, interrupted = prepare_tasks(three_tasks(tmp_path, base, www), tmp_path / "data")
    assert not interrupted and [o.status for o in outcomes] == [PREPARED, FAILED, PREPARED]
    assert f"cannot download {base}/missing.tar.gz: HTTP 404" in outcomes[1].detail
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["a", "c"]


def test_an_unsafe_archive_fails_its_task_only(tmp_path: Path, served, online) -> None:
    www, base = served
    tasks = three_tasks(tmp_path, base, www, broken="")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("../../escaped.txt", "gotcha")
    (www / "evil.zip").write_bytes(buffer.getvalue())
    evil = load(
        tmp_path,
        "evil",
        dtd_card(f"{base}/evil.zip", md5(www / "evil.zip")).replace('"tiny-dtd"', '"evil"').replace("strip = 1", "strip = 0"),
    )
    outcomes, _ = prepare_tasks([tasks[0], evil, tasks[2]], tmp_path / "data")
    assert [o.status for o in outcomes] == [PREPARED, FAILED, PREPARED] and "unsafe path" in outcomes[1].detail


def test_ctrl_c_keeps_the_download_leaves_no_layout_and_the_next_run_finishes(tmp_path: Path, served, online) -> None:
    www, base = served
    tasks = three_tasks(tmp_path, base, www, broken="")
    root = tmp_path / "data"

    def interrupt(task: str, message: str) -> None:
        if task == "a" and message.startswith("unpacking"):
            raise KeyboardInterrupt

    outcomes, interrupted = prepare_tasks(tasks, root, interrupt)
    assert interrupted and [o.status for o in outcomes] == [INTERRUPTED, NOT_STARTED, NOT_STARTED]
    assert "run the same command again to resume" in outcomes[0].detail
    assert sorted(p.name for p in root.iterdir()) == [".downloads"]  # no staging folder, no half layout
    assert [p.name for p in (root / ".downloads").iterdir()] == ["dtd-r1.0.1.tar.gz"]
    outcomes, _ = prepare_tasks(tasks, root)
    assert [o.status for o in outcomes] == [PREPARED, PREPARED, PREPARED]


def test_too_little_free_space_fails_before_downloading(tmp_path: Path, served, online, monkeypatch: pytest.MonkeyPatch) -> None:
    www, base = served
    dtd_like_tarball(www / "dtd-r1.0.1.tar.gz")
    size = (www / "dtd-r1.0.1.tar.gz").stat().st_size
    text = dtd_card(f"{base}/dtd-r1.0.1.tar.gz", md5(www / "dtd-r1.0.1.tar.gz")).replace("strip = 1", f"strip = 1, size = {size}")
    task = load(tmp_path, "tiny-dtd", text)
    monkeypatch.setattr("aimbench.data.download.shutil.disk_usage", lambda _: shutil._ntuple_diskusage(10**12, 10**12 - size, size))
    outcome = prepare_task(task, tmp_path / "data")
    assert outcome.status == FAILED and f"'dtd' (its download and unpacked copy) needs {2 * size / 1000:.1f} kB free" in outcome.detail
    assert "free space there or choose another --data-root" in outcome.detail
    assert not (tmp_path / "data").exists() or list((tmp_path / "data").iterdir()) == []
