"""What every source reader shares: the loaded result, the "not here" signal, file-backed images.

A reader has two halves. ``locate`` is cheap (it looks for the files a layout needs) and says
exactly how to provide what is missing, so ``aimbench ls tasks``, ``tasks check`` and the
pre-flight of ``eval`` can answer before anything is decoded or any backbone is loaded. ``load``
reads the layout's listings into :class:`LabelledImages` without decoding an image.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, UnidentifiedImageError

from aimbench.cards.task_card import SourceSpec
from aimbench.data.images import LabelledImages, Stored, open_limited, to_eight_bit
from aimbench.errors import UserError
from aimbench.special_files import require_regular


class SourceUnavailable(Exception):
    """The data for a source is not present; the message says how to provide it."""


@dataclass(frozen=True)
class LoadedSource:
    splits: dict[str, LabelledImages]
    source: str  # human-readable origin, e.g. "idx:/usr/share/datasets/fashion-mnist"
    revision: str  # pinned revision or content hash
    shared_test_images: int = 0  # the copies of train or val images its test split may hold (the card's source says)


@dataclass(frozen=True)
class SourceReader:
    """``locate`` returns where the data is (or raises :class:`SourceUnavailable`); ``load`` reads it."""

    locate: Callable[[SourceSpec, Path], str]
    load: Callable[[SourceSpec, Path], LoadedSource]


def digest(*chunks: bytes) -> str:
    hasher = hashlib.sha256()
    for chunk in chunks:
        hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()[:16]


def listing_digest(paths: Sequence[Path], labels: Sequence[int], root: Path) -> str:
    """A revision for file layouts: every (relative path, size, modification time, label).

    Not a content hash: hashing every image of ImageNet on each run would cost more than the
    evaluation. A re-labelled, added, removed or rewritten image still changes it.
    A listed image that is not on disk is a user error here, before any run starts.
    """
    try:
        stats = [(p, p.stat(), y) for p, y in zip(paths, labels)]
    except FileNotFoundError as exc:
        raise UserError(f"{root}: a listed image is missing ({exc.filename}); unpack the image archive too") from None
    lines = (f"{p.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}:{y}" for p, st, y in stats)
    return digest("\n".join(lines).encode())


def open_image(source: str | Path | IO[bytes]) -> Image.Image:
    """Decode one image fully (so no file handle stays open), under the pixel limit, in 8-bit range
    (:func:`to_eight_bit`: 16-bit and float images are scaled, never clipped).

    An evaluation never skips an image (the score would be on another test set than the card's),
    so a file PIL cannot decode (empty, truncated, text under an image name) stops it with one
    line naming the file; ``tasks check`` counts such files instead of stopping.
    """
    if isinstance(source, (str, Path)):
        require_regular(Path(source), "image")
    try:
        with open_limited(source) as image:
            image.load()
            return to_eight_bit(image)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # what PIL's decoders raise on damaged data
        where = source if isinstance(source, (str, Path)) else getattr(source, "name", "an embedded image")
        reason = "not a format PIL reads: empty, or not an image" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise UserError(f"cannot decode image {where} ({reason}); replace or remove it ('aimbench tasks check' lists "
                        "every unreadable image)") from None  # fmt: skip


def file_images(paths: Sequence[Path], labels: Sequence[int]) -> LabelledImages:
    """Images decoded from ``paths`` on demand; a file is the same image wherever it is linked from
    (its device and inode: a symlinked folder, a hard link, the same path listed twice)."""
    files = list(paths)
    return LabelledImages(
        lambda i: open_image(files[i]), np.asarray(labels, dtype=np.int64), np.arange(len(files)), partial(file_stored, files)
    )


OPEN_COST = 16_384  # what opening a file costs, in bytes hashed in the same time (about 15 us)


def file_stored(files: Sequence[Path], index: int) -> Stored:
    """Where ``files[index]`` is kept, from one ``stat`` through any symlinks: its (device, inode) and
    size; a file that cannot be stat-ed is known by its path, and one that is not a regular file
    (a FIFO could hang a read) has no size, so its bytes are never read here."""
    path = files[index]
    try:
        st = os.stat(path)
    except OSError:
        return Stored(path, -1, str(path), bytes, 0)
    size = st.st_size if stat.S_ISREG(st.st_mode) else -1
    return Stored((st.st_dev, st.st_ino), size, str(path), path.read_bytes, size + OPEN_COST)


def require_files(folder: Path, names: Sequence[str], how: str) -> None:
    """Raise :class:`SourceUnavailable` naming the first missing file of a layout."""
    if not folder.is_dir():
        raise SourceUnavailable(f"{how} into {folder}")
    for name in names:
        if not (folder / name).exists():
            raise SourceUnavailable(f"{folder / name} is missing; {how} into {folder}")


def read_text_lines(path: Path) -> list[str]:
    """Non-empty, non-comment lines of a listing file, or a one-line error if it is unreadable."""
    require_regular(path, "list file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"corrupt data file {path}: {exc}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
