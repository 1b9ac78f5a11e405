"""``aimbench tasks prepare``: fetch what can be fetched and unpack it into the card's layout.

For each task the first present source wins. Otherwise the card's sources are tried in order:
archives and list files are downloaded into ``<data-root>/.downloads`` by
:mod:`aimbench.data.download` (resumable, retried, verified against the card's checksum or exact
size before use), unpacked into a hidden staging folder and moved into place only when complete,
so an interrupted prepare leaves nothing that ``locate`` would mistake for data, only ``.part``
downloads that the next run resumes. Free space is checked before each source against the sizes
the card states (a download, and as much again to unpack it), and before each file against the
size its server announces. Nothing is written outside the data root: the card's folder must
resolve inside it (links included) and no archive member may land outside the staging folder;
either fails the task with one line instead of falling back to its next source. Hugging Face
sources are snapshotted into ``<data-root>/hf/<id>`` at the card's revision. Gated datasets
(ImageNet) end with the card's manual step. Offline (``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``)
nothing is fetched and the outcome says so.

:func:`prepare_tasks` prepares a list the way ``tasks prepare all`` needs: one task's failure is
its row of the summary and the others go on; Ctrl-C ends the list with the rows so far.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from aimbench.cards.task_card import SourceSpec, TaskSpec
from aimbench.confine import resolves_inside
from aimbench.data.download import Retry, fetch, part_of, require_free_space
from aimbench.data.hf_source import snapshot_dir
from aimbench.data.progress import ByteMeter
from aimbench.data.sources import TaskNotReady, locate_source
from aimbench.errors import UserError

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
DOWNLOADS_DIR = ".downloads"
CHUNK = 1 << 20  # unzip copy buffer

READY, PREPARED, MANUAL, OFFLINE, FAILED = "ready", "prepared", "manual step needed", "offline", "failed"
INTERRUPTED, NOT_STARTED = "interrupted", "not started"


@dataclass(frozen=True)
class PrepareOutcome:
    task: str
    status: str
    detail: str


def is_offline() -> bool:
    return any(os.environ.get(name, "").lower() in ("1", "true", "yes", "on") for name in OFFLINE_VARIABLES)


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


def _space_needed(source: SourceSpec, downloads: Path) -> int:
    """Bytes the card's stated sizes call for: what is left to download, and each file's size again
    for its unpacked copy (image archives hardly compress). Downloads without a stated size are
    checked when their server announces one."""
    needed = 0
    for download in source.downloads:
        if download.size is None:
            continue
        final, part = downloads / download.file, part_of(downloads / download.file)
        held = download.size if final.is_file() else part.stat().st_size if part.is_file() else 0
        needed += max(download.size - held, 0) + download.size
    return needed


def _unpacked_size(archive: Path) -> int:
    """What unpacking ``archive`` writes: exact for a zip (its directory lists every size), at least
    the archive's own size otherwise (a tar's sizes are known only by reading it through)."""
    if archive.name.lower().endswith(".zip"):
        with contextlib.suppress(zipfile.BadZipFile, OSError), zipfile.ZipFile(archive) as zipped:
            return sum(info.file_size for info in zipped.infolist())
    return archive.stat().st_size


def _fetch_downloads(source: SourceSpec, data_root: Path, progress: Callable[[str], None], retry: Retry, meter: ByteMeter | None) -> None:
    final = _write_target(source, data_root)
    downloads = data_root / DOWNLOADS_DIR
    require_free_space(data_root, _space_needed(source, downloads), f"'{source.options['dir']}' (its download and unpacked copy)")
    staging = data_root / f".{source.options['dir'].replace('/', '_')}.part"
    staging.unlink() if staging.is_symlink() else shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for download in source.downloads:
            progress(f"fetching {download.url}")
            fetched = fetch(download, downloads, retry, meter, progress)
            require_free_space(staging, _unpacked_size(fetched), f"unpacking {fetched.name}")
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
    finally:  # also on Ctrl-C: the staging folder goes, the downloads' .part files stay for the next run
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(OSError):  # a failed first download leaves no empty folder behind
            downloads.rmdir()
    for download in source.downloads:  # unpacked and in place: the archives are no longer needed
        (downloads / download.file).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        downloads.rmdir()


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


def prepare_task(
    task: TaskSpec,
    data_root: Path,
    progress: Callable[[str], None] = lambda _: None,
    retry: Retry = Retry(),
    meter: ByteMeter | None = None,
) -> PrepareOutcome:
    """Make ``task`` ready if this machine can; the outcome says what happened or what is left to do.

    A source that fails (its download, its space, its archive) falls back to the next one; an
    :class:`EscapesDataRoot` is raised, since no other source makes that card or archive safe.
    """
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
            if source.kind == "hf":
                _fetch_hf(source, data_root, progress)
            else:
                _fetch_downloads(source, data_root, progress, retry, meter)
            return PrepareOutcome(task.name, PREPARED, locate_source(task, data_root).where)
        except EscapesDataRoot:
            raise
        except UserError as exc:
            errors.append(str(exc))
        except OSError as exc:  # creating or moving folders under the data root: permissions, a read-only mount
            errors.append(f"cannot write under {data_root}: {exc}")
    return PrepareOutcome(task.name, FAILED, "; ".join(errors + manual))


def prepare_tasks(
    tasks: list[TaskSpec],
    data_root: Path,
    progress: Callable[[str, str], None] = lambda _task, _message: None,
    retry: Retry = Retry(),
    meter: ByteMeter | None = None,
) -> tuple[list[PrepareOutcome], bool]:
    """Prepare each task in turn; return an outcome per task and whether Ctrl-C stopped the list.

    A task that fails, however (its downloads, the disk, an unsafe archive), is its own failed
    outcome and the next task goes on: a network error on the 8th of 15 tasks must not cost the
    other seven. Ctrl-C marks the task in progress interrupted (its partial downloads stay, to be
    resumed by the same command) and the rest not started; the caller still prints the table.
    """
    outcomes: list[PrepareOutcome] = []
    for index, task in enumerate(tasks):
        try:
            outcomes.append(prepare_task(task, data_root, functools.partial(progress, task.name), retry, meter))
        except KeyboardInterrupt:
            resume = f"stopped; partial downloads are kept in {data_root / DOWNLOADS_DIR}: run the same command again to resume"
            outcomes.append(PrepareOutcome(task.name, INTERRUPTED, resume))
            outcomes += [PrepareOutcome(t.name, NOT_STARTED, "not started (interrupted)") for t in tasks[index + 1 :]]
            return outcomes, True
        except UserError as exc:  # EscapesDataRoot: this card or archive is not to be trusted, the next task may be
            outcomes.append(PrepareOutcome(task.name, FAILED, str(exc)))
    return outcomes, False
