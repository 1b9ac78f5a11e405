"""``aimbench tasks prepare``: fetch what can be fetched and unpack it into the card's layout.

For each task the first present source wins. Otherwise the card's sources are tried in order:
archives and list files are downloaded (their published MD5/SHA-256 checked while streaming),
unpacked into a hidden staging folder and moved into place only when complete, so an interrupted
prepare leaves nothing that ``locate`` would mistake for data. Nothing is written outside the data
root: the card's folder must resolve inside it (links included) and no archive member may land
outside the staging folder; either stops ``prepare`` with one line. Hugging Face sources are
snapshotted into ``<data-root>/hf/<id>`` at the card's revision. Gated datasets (ImageNet,
iNaturalist) end with the card's manual step. Offline (``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``)
nothing is fetched and the outcome says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from aimbench.atomic import atomic_write
from aimbench.cards.task_card import Download, SourceSpec, TaskSpec
from aimbench.confine import resolves_inside
from aimbench.data.hf_source import snapshot_dir
from aimbench.data.sources import TaskNotReady, locate_source
from aimbench.errors import UserError

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
DOWNLOADS_DIR = ".downloads"
CHUNK = 1 << 20

READY, PREPARED, MANUAL, OFFLINE, FAILED = "ready", "prepared", "manual step needed", "offline", "failed"


@dataclass(frozen=True)
class PrepareOutcome:
    task: str
    status: str
    detail: str


def is_offline() -> bool:
    return any(os.environ.get(name, "").lower() in ("1", "true", "yes", "on") for name in OFFLINE_VARIABLES)


def _download(download: Download, folder: Path, progress: Callable[[str], None]) -> Path:
    """Stream ``download`` into ``folder``, checking its published checksums; reuse a verified copy."""
    target = folder / download.file
    if target.is_file() and _checksum_problem(download, target) is None:
        return target
    progress(f"downloading {download.url}")
    hashes = {name: hashlib.new(name, usedforsecurity=False) for name in ("md5", "sha256")}

    def write(handle) -> None:
        with urllib.request.urlopen(download.url, timeout=60) as response:  # noqa: S310 - http(s) only, checked by the card parser
            while chunk := response.read(CHUNK):
                handle.write(chunk)
                for hasher in hashes.values():
                    hasher.update(chunk)
        for name, expected in (("md5", download.md5), ("sha256", download.sha256)):
            if expected is not None and hashes[name].hexdigest() != expected:
                raise UserError(f"{download.url}: {name} is {hashes[name].hexdigest()}, the card publishes {expected}")

    try:
        atomic_write(target, write)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
        raise UserError(f"cannot download {download.url}: {reason}") from None
    return target


def _checksum_problem(download: Download, path: Path) -> str | None:
    for name, expected in (("md5", download.md5), ("sha256", download.sha256)):
        if expected is None:
            continue
        hasher = hashlib.new(name, usedforsecurity=False)
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                hasher.update(chunk)
        if hasher.hexdigest() != expected:
            return f"{path}: {name} is {hasher.hexdigest()}, the card publishes {expected}"
    return None


class EscapesDataRoot(UserError):
    """A write that would land outside its folder: an archive member outside the staging folder
    (a ``..`` or absolute path, a link pointing out, a device file), or a card's folder that
    resolves outside the data root. Not a failed download to retry from the next source: the
    checksum matched, so the card or the archive is not to be trusted; it stops ``prepare``."""


def _stripped(name: str, strip: int) -> str | None:
    parts = PurePosixPath(name).parts[strip:]
    return str(PurePosixPath(*parts)) if parts else None


def _untar(archive: Path, into: Path, strip: int) -> None:
    """Python's ``data`` filter refuses members (and link targets) that leave ``into``, absolute
    links and device files; hard-link targets name archive members, so they are stripped too."""
    with tarfile.open(archive) as tar:
        members = []
        for member in tar.getmembers():
            stripped = _stripped(member.name, strip)
            target = _stripped(member.linkname, strip) if member.islnk() else member.linkname
            if stripped is not None and target is not None:
                member.name, member.linkname = stripped, target
                members.append(member)
        try:
            tar.extractall(into, members=members, filter="data")
        except tarfile.FilterError as exc:
            raise EscapesDataRoot(f"{archive}: refusing the unsafe member {exc.tarinfo.name!r} ({exc})") from None


def _unzip(archive: Path, into: Path, strip: int) -> None:
    """Zip members become regular files (a symbolic-link entry is written as a small file, never
    followed), each checked to land inside ``into``."""
    root = into.resolve()
    with zipfile.ZipFile(archive) as zipped:
        for info in zipped.infolist():
            stripped = _stripped(info.filename, strip)
            if stripped is None or info.is_dir():
                continue
            target = (into / stripped).resolve()
            if not target.is_relative_to(root) or target == root:
                raise EscapesDataRoot(f"{archive}: refusing the unsafe path {info.filename!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with zipped.open(info) as source, target.open("wb") as sink:
                shutil.copyfileobj(source, sink, CHUNK)


def _unpack(archive: Path, into: Path, strip: int) -> None:
    """Unpack a tar or zip archive with ``strip`` leading components removed, refusing unsafe paths."""
    name = archive.name.lower()
    try:
        if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
            _untar(archive, into, strip)
        elif name.endswith(".zip"):
            _unzip(archive, into, strip)
        else:
            shutil.copy2(archive, into / archive.name)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise UserError(f"corrupt archive {archive}: {exc}") from None


def _write_target(source: SourceSpec, data_root: Path) -> Path:
    """The folder ``prepare`` writes for ``source``; it must resolve inside the data root.

    The card was checked when it loaded (a relative ``dir``, no ``..`` leading out); this also
    resolves symbolic links, so a link in the data root cannot send the unpacked files (and the
    replacement of what is already there) to another folder.
    """
    target = snapshot_dir(source, data_root) if source.kind == "hf" else data_root / source.options["dir"]
    if not resolves_inside(target, data_root):
        raise EscapesDataRoot(f"{target} resolves to {target.resolve()}, outside the data root {data_root}; 'tasks prepare' "
                              "writes only inside it (remove the link, or unpack the data there yourself)")  # fmt: skip
    return target


def _fetch_downloads(source: SourceSpec, data_root: Path, progress: Callable[[str], None]) -> None:
    final = _write_target(source, data_root)
    staging = data_root / f".{source.options['dir'].replace('/', '_')}.part"
    staging.unlink() if staging.is_symlink() else shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for download in source.downloads:
            fetched = _download(download, data_root / DOWNLOADS_DIR, progress)
            progress(f"unpacking {fetched.name}")
            _unpack(fetched, staging, download.strip)
        final.mkdir(parents=True, exist_ok=True)
        for entry in staging.iterdir():  # move into place last: a half-unpacked layout is never visible
            target = final / entry.name
            if target.is_symlink() or target.is_file():
                target.unlink()  # a link itself, never what it points to
            elif target.exists():
                shutil.rmtree(target)
            os.replace(entry, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(OSError):  # a failed first download leaves no empty folder behind
            (data_root / DOWNLOADS_DIR).rmdir()
    for download in source.downloads:  # unpacked and in place: the archives are no longer needed
        (data_root / DOWNLOADS_DIR / download.file).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (data_root / DOWNLOADS_DIR).rmdir()


def _fetch_hf(source: SourceSpec, data_root: Path, progress: Callable[[str], None]) -> None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    target = _write_target(source, data_root)
    progress(f"downloading {source.options['id']}@{source.options['revision'][:12]}")
    patterns = [*source.options["data_files"].values(), "README.md"] if source.options["data_files"] else None
    try:
        snapshot_download(
            source.options["id"], repo_type="dataset", revision=source.options["revision"], local_dir=target,
            allow_patterns=patterns,
        )  # fmt: skip
    except (HfHubHTTPError, OSError, ValueError) as exc:
        shutil.rmtree(target, ignore_errors=True)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot download {source.options['id']}: {reason}") from None


def prepare_task(task: TaskSpec, data_root: Path, progress: Callable[[str], None] = lambda _: None) -> PrepareOutcome:
    """Make ``task`` ready if this machine can; the outcome says what happened or what is left to do."""
    try:
        return PrepareOutcome(task.name, READY, locate_source(task, data_root).where)
    except TaskNotReady as exc:
        missing = str(exc)
    fetchable = [s for s in task.sources if s.downloads or (s.kind == "hf" and not Path(s.options["id"]).is_absolute())]
    manual = [s.hint for s in task.sources if s.hint]
    if not fetchable:
        return PrepareOutcome(task.name, MANUAL, " or ".join(manual) if manual else missing)
    if is_offline():
        unset = "unset " + " and ".join(OFFLINE_VARIABLES) + " to fetch"
        return PrepareOutcome(task.name, OFFLINE, "; ".join([unset, *manual]))
    errors = []
    for source in fetchable:
        try:
            (_fetch_hf if source.kind == "hf" else _fetch_downloads)(source, data_root, progress)
            return PrepareOutcome(task.name, PREPARED, locate_source(task, data_root).where)
        except EscapesDataRoot:
            raise
        except UserError as exc:
            errors.append(str(exc))
    return PrepareOutcome(task.name, FAILED, "; ".join(errors + manual))
