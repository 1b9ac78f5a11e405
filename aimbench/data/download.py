"""Resumable, verified HTTP downloads for ``tasks prepare``.

A full ``tasks prepare all`` fetches ~260 GB in long single streams (iNaturalist's 120 GB, the WILDS
archives ~83 GB), where a dropped connection is a matter of when, not if. So:

- bytes go to ``<file>.part`` in the download folder, and ``<file>.part.json`` beside it records
  the URL, the announced size and the server's ``ETag``/``Last-Modified``; a later attempt (or a
  later run, after Ctrl-C or a lost node) resumes with an HTTP ``Range`` request, guarded by
  ``If-Range``, and starts again from zero when the server ignores ``Range`` or the file changed
  (another ``ETag``, ``Last-Modified`` or size);
- the announced length is enforced: a stream that ends early is a failure to retry, never a file.
  Without ``Content-Length`` (a close-delimited stream) an early end cannot be seen on the wire;
  the card's size or checksum catches it;
- transient failures (a reset or refused connection, a stall past the socket timeout, a chunked
  stream cut off, HTTP 5xx, 408, 429 honouring ``Retry-After``) are retried with exponential
  backoff; :attr:`Retry.attempts` failures in a row that brought no new byte give up, keeping the
  ``.part`` file for the next run. Other HTTP errors (404, 403, ...) fail at once;
- a file becomes ``<file>`` only when complete and verified against the card (its MD5/SHA-256, or
  its exact size where the publisher gives no checksum), and a ``<file>`` already there is verified
  again before it is reused. A complete download that fails verification is fetched once more from
  zero (a cut that no length could reveal), then deleted with one line naming the URL.

Every failure is a :class:`~aimbench.errors.UserError` naming the URL and what to do.
"""

from __future__ import annotations

import email.utils
import errno
import hashlib
import http.client
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aimbench.atomic import atomic_write
from aimbench.cards.task_card import Download
from aimbench.data.progress import ByteMeter, SilentMeter, human_bytes
from aimbench.errors import UserError

CHUNK = 1 << 20
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})  # and every other 5xx
VERIFY_TRIES = 2  # full downloads that fail verification before giving up: a hidden cut, then a wrong file
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class Retry:
    """How hard to try. ``sleep`` is injectable so that tests never wait on the wall clock."""

    attempts: int = 8  # failures in a row that brought no new byte
    backoff_s: float = 2.0  # the first wait, doubled after each failure in a row
    max_wait_s: float = 300.0  # cap on the backoff and on a server's Retry-After
    timeout_s: float = 60.0  # a connection or a read silent this long is a failure
    sleep: Callable[[float], None] = time.sleep

    def wait(self, failures: int, retry_after: float | None) -> float:
        wanted = retry_after if retry_after is not None else self.backoff_s * 2 ** max(failures - 1, 0)
        return min(wanted, self.max_wait_s)


class _Transient(Exception):
    """A failure worth retrying; ``retry_after`` is the server's wish (0 to retry at once)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def part_of(final: Path) -> Path:
    return final.with_name(final.name + ".part")


def _state_of(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _read_state(part: Path, url: str) -> dict[str, Any] | None:
    """What ``part`` was fetched from, or None if it is not a resumable copy of ``url``."""
    try:
        state = json.loads(_state_of(part).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and state.get("url") == url and part.is_file() else None


def _write_state(part: Path, state: dict[str, Any]) -> None:
    atomic_write(_state_of(part), lambda handle: handle.write(json.dumps(state).encode()))


def discard_partial(part: Path) -> None:
    part.unlink(missing_ok=True)
    _state_of(part).unlink(missing_ok=True)


def verification_problem(download: Download, path: Path) -> str | None:
    """Why ``path`` is not the file the card describes (size first: it costs no read), or None."""
    if download.size is not None and (actual := path.stat().st_size) != download.size:
        return f"{download.url}: the file has {actual} bytes, the card gives {download.size}"
    for name, expected in (("md5", download.md5), ("sha256", download.sha256)):
        if expected is None:
            continue
        hasher = hashlib.new(name, usedforsecurity=False)
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                hasher.update(chunk)
        if hasher.hexdigest() != expected:
            return f"{download.url}: {name} is {hasher.hexdigest()}, the card publishes {expected}"
    return None


def require_free_space(folder: Path, needed: int, what: str) -> None:
    """Refuse to start what would fill the disk: an hours-long download that dies at 95% wastes the hours."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise UserError(f"{what} needs {human_bytes(needed)} free in {folder}, {human_bytes(free)} are: free space there "
                        "or choose another --data-root")  # fmt: skip


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    with_date = email.utils.parsedate_to_datetime(value) if email.utils.parsedate_tz(value) else None
    return None if with_date is None else max(with_date.timestamp() - time.time(), 0.0)


def _http_error(exc: urllib.error.HTTPError, download: Download, part: Path) -> Exception:
    """The exception an HTTP error status stands for: transient, or a user error (the part is then useless)."""
    with exc:
        if exc.code in TRANSIENT_STATUS or exc.code >= 500:
            return _Transient(f"HTTP {exc.code} {exc.reason}", _retry_after(exc.headers.get("Retry-After")))
    discard_partial(part)
    advice = {
        401: "the server wants a login: download it by hand",
        403: "the server refuses access (a login or licence acceptance?): download it by hand",
        404: "the file is not at this address any more: check the task's homepage and update the card's URL",
        410: "the file is not at this address any more: check the task's homepage and update the card's URL",
    }.get(exc.code, "check the URL in the card")
    return UserError(f"cannot download {download.url}: HTTP {exc.code} {exc.reason}; {advice}")


def _resume_refused(exc: urllib.error.HTTPError, part: Path, state: dict[str, Any], offset: int) -> None:
    """HTTP 416 to ``Range: bytes=<offset>-``: the part is complete if the file's size is ``offset``
    (recorded, so that the next attempt sees it), else the file changed; either way, try again."""
    with exc:
        match = re.fullmatch(r"bytes \*/(\d+)", exc.headers.get("Content-Range", ""))
    if match is not None and int(match.group(1)) == offset:
        _write_state(part, {**state, "total": offset})
        raise _Transient("the partial download was already complete", retry_after=0.0)
    discard_partial(part)
    raise _Transient("the server refused the resume point (the file changed?); starting again", retry_after=0.0)


def _announced(response: http.client.HTTPResponse, offset: int) -> tuple[int, int | None]:
    """Where this response starts in the file and the file's total size (None if not announced)."""
    if response.status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if match is None:
            raise _Transient("the server answered a range request without a usable Content-Range; starting again", 0.0)
        total = match.group(3)
        return int(match.group(1)), None if total == "*" else int(total)
    length = response.headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else None


def _transfer(download: Download, part: Path, retry: Retry, meter: ByteMeter, say: Callable[[str], None]) -> None:
    """One attempt: resume or start ``part`` and stream into it until the stream ends.

    Returns when the announced length (or, without one, the end of the stream) is reached;
    raises :class:`_Transient` for anything worth another attempt.
    """
    state = _read_state(part, download.url)
    if state is None:
        discard_partial(part)
        state = {}
    offset = part.stat().st_size if part.is_file() else 0
    total = state.get("total") or download.size
    if total is not None and offset == total:
        return  # complete already: an earlier attempt was stopped between the last byte and the rename
    headers = {"User-Agent": "aimbench", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if state.get("etag") or state.get("last_modified"):
            headers["If-Range"] = state.get("etag") or state["last_modified"]
    request = urllib.request.Request(download.url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=retry.timeout_s)  # noqa: S310 - http(s) only, checked by the card parser
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            _resume_refused(exc, part, state, offset)
        raise _http_error(exc, download, part) from None
    except (OSError, http.client.HTTPException) as exc:
        raise _Transient(_reason(exc)) from None
    with response:
        start, announced = _announced(response, offset)
        etag, modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
        changed = (
            (state.get("total") not in (None, announced))
            or (state.get("etag") not in (None, etag))
            or (state.get("last_modified") not in (None, modified))
        )
        if offset and response.status == 206 and (start != offset or changed):
            discard_partial(part)
            raise _Transient(f"{download.file} changed on the server since the partial download; starting again", 0.0)
        if offset and response.status != 206:
            say(f"{download.file}: the server sent the whole file, not the rest (it ignores Range, or the file changed); starting again")
            offset = 0
        if download.size is not None and announced is not None and announced != download.size:
            discard_partial(part)
            raise UserError(f"cannot download {download.url}: the server announces {announced} bytes, the card gives "
                            f"{download.size}; the published file changed: update the card's size (and checksum) from its source")  # fmt: skip
        total = announced or download.size
        if total is not None:
            require_free_space(part.parent, total - offset, f"downloading {download.file}")
        _write_state(part, {"url": download.url, "total": announced, "etag": etag, "last_modified": modified})
        received = offset
        meter.start(download.file, total, offset)
        try:
            with part.open("ab" if offset else "wb") as handle:
                while True:
                    try:
                        chunk = response.read1(CHUNK)  # what has arrived: a cut or a stall loses no byte received
                    except (OSError, http.client.HTTPException) as exc:
                        raise _Transient(_reason(exc)) from None
                    if not chunk:
                        break
                    handle.write(chunk)
                    received += len(chunk)
                    meter.advance(len(chunk))
                handle.flush()
                os.fsync(handle.fileno())
        finally:
            meter.finish()
    if total is not None and received < total:
        raise _Transient(f"the connection ended after {received} of {total} bytes")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, http.client.IncompleteRead):
        return f"the stream was cut off ({type(exc).__name__})"
    if isinstance(exc, TimeoutError) or "timed out" in str(exc):
        return "the server stopped sending (timed out)"
    reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    return str(reason)


def fetch(
    download: Download,
    folder: Path,
    retry: Retry = Retry(),
    meter: ByteMeter | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> Path:
    """``folder/<file>``, complete and verified: reused if it verifies, else downloaded (resumed if a
    ``.part`` is there). Raises :class:`UserError` naming the URL and what to do."""
    meter = meter or SilentMeter()
    final = folder / download.file
    if final.is_file():
        problem = verification_problem(download, final)
        if problem is None:
            return final
        say(f"{final.name} does not verify ({problem}); fetching it again")
        final.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    part = part_of(final)
    failures, wrong = 0, 0
    while True:
        before = part.stat().st_size if part.is_file() else 0
        try:
            _transfer(download, part, retry, meter, say)
        except _Transient as exc:
            progressed = part.is_file() and part.stat().st_size > before
            failures = 1 if progressed else failures + 1
            if failures > retry.attempts:
                held = part.stat().st_size if part.is_file() else 0
                kept = f"; {human_bytes(held)} are kept in {part}" if held else ""
                raise UserError(f"cannot download {download.url}: {exc} ({retry.attempts} retries){kept}; run the same command "
                                "again later to resume") from None  # fmt: skip
            wait = retry.wait(failures, exc.retry_after)
            say(f"{download.file}: {exc}; retrying in {wait:.0f} s ({failures} of {retry.attempts})")
            retry.sleep(wait)
            continue
        except OSError as exc:  # writing the part file: the disk, not the network
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise UserError(f"no space left on the device while downloading {download.url} into {part} (kept, "
                                "resumable): free space there and run again") from None  # fmt: skip
            raise UserError(f"cannot write {part}: {exc.strerror or exc}") from None
        problem = verification_problem(download, part)
        if problem is None:
            break
        discard_partial(part)
        wrong += 1
        if wrong >= VERIFY_TRIES:
            raise UserError(f"{problem} (the download was deleted); if a fresh run fails the same way, the published file "
                            "changed: report it, or fetch it by hand and check it")  # fmt: skip
        say(f"{problem}; fetching it again from the start")
    os.replace(part, final)
    _state_of(part).unlink(missing_ok=True)
    return final
