"""Where pre-training images come from: the ``--data`` sources and random access into each.

``--data`` syntax
-----------------
Sources separated by commas, each ``PATH``, ``PATH=WEIGHT`` or ``PATH@WEIGHT``::

    --data /data/imagenet/train
    --data 'web/shards-{0000..0999}.tar=0.8,/data/imagenet/train=0.2'

WEIGHT is a positive number (default 1); weights are relative and normalised to sum to 1. Only a
trailing ``=NUMBER`` or ``@NUMBER`` is a weight, so paths may contain ``=`` and ``@`` (a path that
itself ends in ``=NUMBER`` takes an explicit weight: ``odd=2=1``). Commas inside ``{...}`` belong to a brace
pattern; every other comma separates sources. Quote the value: shells expand braces themselves.

A PATH is one of:

- WebDataset shards: a ``.tar`` file, a folder whose top level holds ``*.tar`` files, or a brace
  pattern (``shards-{000..009}.tar`` zero-padded like its start, ``{a,b}.tar``). Members with an
  image extension are the images. Shards must be uncompressed: members are read by offset.
- A Hugging Face dataset on disk: a folder written by ``save_to_disk``, a folder whose top level or
  ``data/`` holds ``.parquet``/``.arrow`` files, or such a file (read with ``datasets.load_dataset``,
  offline); its ``train`` split, else all splits; its first ``datasets.Image`` column.
- Any other folder: every ``.jpg .jpeg .png .webp .bmp`` file below it, at any depth.
- A URL (``hf://datasets/OWNER/NAME``, ``s3://...``, any fsspec URL): a Parquet image dataset
  streamed a row group at a time, never downloaded whole (``aimbench.pretrain.streaming``).

Labels are ignored everywhere.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import tarfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from aimbench.data.images import open_limited
from aimbench.errors import UserError
from aimbench.pretrain.streaming import StreamedImages, is_stream, pin

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# Decoders tried on any member whatever its extension (web data mislabels formats). An allow-list,
# so untrusted bytes never reach PIL's riskier plugins (EPS runs Ghostscript); the rest count as unreadable.
DECODERS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")  # JPEG includes multi-picture (MPO) camera files
HF_SUFFIXES = (".parquet", ".arrow")
MAX_TRIES = 64
HOW = ("give image folders, Hugging Face datasets saved on disk, .tar shards or a streamed hf://datasets/OWNER/NAME, "
       "e.g. --data 'web/shards-{0000..0999}.tar=0.8,/data/imagenet/train=0.2'")  # fmt: skip


@dataclass(frozen=True)
class DataSource:
    """One ``--data`` item: where its images are, its share of every batch, and how to read it."""

    location: str  # absolute path, or an absolute brace pattern of .tar shards
    weight: float  # normalised: the weights of one --data sum to 1
    kind: str  # "folder" | "hf" | "tar" | "stream"


def expand_braces(pattern: str) -> list[str]:
    """Expand WebDataset brace groups left to right: ``{000..009}`` (zero-padded like its start) and ``{a,b}``."""
    group = re.search(r"\{([^{}]*)\}", pattern)
    if group is None:
        return [pattern]
    head, body, tail = pattern[: group.start()], group.group(1), pattern[group.end() :]
    span = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    choices = [str(i).zfill(len(span[1])) for i in range(int(span[1]), int(span[2]) + 1)] if span else body.split(",")
    return [path for choice in choices for path in expand_braces(head + choice + tail)]


def _absolute(text: str) -> str:
    return os.path.abspath(os.path.expanduser(text))


def _exists(text: str) -> bool:
    return any(os.path.exists(path) for path in expand_braces(_absolute(text)))


def _has_image(folder: Path) -> bool:
    """Stops at the first image, so a huge folder is not listed just to validate the argument."""
    return any(name.lower().endswith(IMAGE_SUFFIXES) for _, _, files in os.walk(folder) for name in files)


def _kind(path: Path) -> str | None:
    """Which reader a path needs (``save_to_disk`` markers, then ``*.tar``, then tables); None for an unusable file."""
    if path.is_file():
        suffix = path.suffix.lower()
        return "tar" if suffix == ".tar" else "hf" if suffix in HF_SUFFIXES else None
    if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
        return "hf"
    top = [entry.name.lower() for entry in os.scandir(path)]
    if any(name.endswith(".tar") for name in top):
        return "tar"
    tables = top + ([entry.name.lower() for entry in os.scandir(path / "data")] if (path / "data").is_dir() else [])
    return "hf" if any(name.endswith(HF_SUFFIXES) for name in tables) else "folder"


def _split_weight(item: str) -> tuple[str, float]:
    split = re.fullmatch(r"(.*)[@=]([^@=]*)", item, flags=re.DOTALL)
    if split:
        path, text = split.groups()
        try:
            weight = float(text)
        except ValueError:
            if _exists(path) and not _exists(item):
                raise UserError(f"--data item '{item}': the weight '{text}' is not a number") from None
            return item, 1.0
        if not (math.isfinite(weight) and weight > 0):
            raise UserError(f"--data item '{item}': the weight must be a positive number, got '{text}'")
        return path, weight
    return item, 1.0


def _locate(path_text: str) -> tuple[str, str]:
    """(absolute location, kind) of one item's path, or the UserError saying what is wrong with it."""
    if is_stream(path_text):
        return path_text, "stream"  # read (and, on the hub, pinned to a commit) when the run starts
    location = _absolute(path_text)
    if not os.path.exists(location) and re.search(r"\{[^{}]*\}", location):
        shards = expand_braces(location)
        missing = [shard for shard in shards if not os.path.isfile(shard)]
        if not shards or missing:
            first = f", first: {missing[0]}" if missing else ""
            raise UserError(f"--data: the pattern {path_text} names {len(shards)} shard(s), {len(missing)} missing{first}; {HOW}")
        return location, "tar"
    path = Path(location)
    if not path.exists():
        raise UserError(f"--data: {location} does not exist; {HOW}")
    kind = _kind(path)
    if kind is None:
        raise UserError(f"--data: {location} is not a folder, a .tar shard or a .parquet/.arrow file; {HOW}")
    if kind == "folder" and not _has_image(path):
        raise UserError(f"--data: no image files ({' '.join(IMAGE_SUFFIXES)}) under {location}; {HOW}")
    return location, kind


def parse_data(text: str) -> list[DataSource]:
    """Parse ``--data`` (syntax in the module docstring): every path must exist, weights end up summing to 1."""
    if not text.strip():
        raise UserError(f"--data is empty; {HOW}")
    parsed = []
    for number, raw in enumerate(re.split(r",(?![^{]*\})", text), start=1):
        item = raw.strip()
        if not item:
            raise UserError(f"--data item {number} of '{text}' is empty (a stray comma?); {HOW}")
        path_text, weight = _split_weight(item)
        parsed.append((*_locate(path_text), weight))
    total = sum(weight for _, _, weight in parsed)
    return [DataSource(location, weight / total, kind) for location, kind, weight in parsed]


def pinned(sources: list[DataSource]) -> list[DataSource]:
    """The sources with every hub stream pinned to its current commit (the network is asked once per stream)."""
    return [replace(source, location=pin(source.location)) if source.kind == "stream" else source for source in sources]


class ImageSource(Protocol):
    """Random access to the encoded images of one source; built on first use in whichever process reads."""

    def __len__(self) -> int: ...
    def name(self, index: int) -> str: ...
    def read(self, index: int) -> bytes: ...
    def names_bytes(self) -> list[bytes] | None:
        """What names its images, for :func:`listing` (None: pinned another way, as a stream's commit)."""
        ...


class _FolderImages:
    def __init__(self, root: str) -> None:
        self.root = root
        found = [os.path.relpath(os.path.join(folder, name), root)
                 for folder, _, files in os.walk(root) for name in files if name.lower().endswith(IMAGE_SUFFIXES)]  # fmt: skip
        # sorted, as the filesystem's order differs between machines; bytes, not str: a quarter of the memory
        self.paths = np.array([os.fsencode(p) for p in sorted(found)], dtype=np.bytes_)

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, index: int) -> str:
        return os.path.join(self.root, os.fsdecode(self.paths[index]))

    def names_bytes(self) -> list[bytes] | None:
        return [b"\n".join(self.paths.tolist())]

    def read(self, index: int) -> bytes:
        with open(self.name(index), "rb") as handle:
            return handle.read()


class _HFImages:
    def __init__(self, location: str) -> None:
        import datasets

        path = Path(location)
        try:
            if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
                loaded = datasets.load_from_disk(location)
            elif path.is_file():
                loaded = datasets.load_dataset(path.suffix[1:].lower(), data_files=location)
            else:
                loaded = datasets.load_dataset(location)
            if isinstance(loaded, datasets.DatasetDict):
                loaded = loaded["train"] if "train" in loaded else datasets.concatenate_datasets([loaded[k] for k in sorted(loaded)])
        except (OSError, ValueError) as exc:
            raise UserError(
                f"--data {location}: not a readable Hugging Face dataset ({type(exc).__name__}: {str(exc).splitlines()[0]})"
            ) from None
        columns = [name for name, feature in loaded.features.items() if isinstance(feature, datasets.Image)]
        if not columns:
            raise UserError(f"--data {location}: no image column (a datasets.Image feature) among {loaded.column_names}")
        if len(loaded) == 0:
            raise UserError(f"--data {location}: the dataset has no rows; {HOW}")
        self.location, self.column = location, columns[0]
        # undecoded, so a corrupt image is ours to skip and count rather than an exception inside datasets
        self.rows = loaded.select_columns([self.column]).cast_column(self.column, datasets.Image(decode=False))

    def __len__(self) -> int:
        return len(self.rows)

    def name(self, index: int) -> str:
        return f"{self.location} row {index}"

    def names_bytes(self) -> list[bytes] | None:
        return [str(getattr(self.rows, "_fingerprint", "")).encode()]

    def read(self, index: int) -> bytes:
        cell = self.rows[int(index)][self.column]
        if cell["bytes"] is not None:
            return cell["bytes"]
        with open(cell["path"], "rb") as handle:
            return handle.read()


class _TarImages:
    """Every image member of the shards, indexed once by (shard, data offset, size) for reads by offset."""

    def __init__(self, location: str) -> None:
        self.shards = sorted(str(p) for p in Path(location).glob("*.tar")) if os.path.isdir(location) else expand_braces(location)
        members: list[tuple[int, int, int]] = []
        for number, path in enumerate(self.shards):
            try:
                archive = tarfile.open(path, "r:")
            except (tarfile.TarError, OSError) as exc:
                raise UserError(f"--data {location}: {path} is not an uncompressed tar ({exc}); shards are read by offset") from None
            with archive:
                try:
                    for member in archive:
                        if member.isfile() and member.name.lower().endswith(IMAGE_SUFFIXES):
                            members.append((number, member.offset_data, member.size))
                except tarfile.TarError:
                    pass  # a truncated shard keeps the members before the damage; a cut-off image is counted as unreadable
        if not members:
            raise UserError(f"--data {location}: no image members ({' '.join(IMAGE_SUFFIXES)}) in {len(self.shards)} shard(s); {HOW}")
        self.shard, self.offset, self.size = np.array(members, dtype=np.int64).T  # 24 bytes an image, no Python objects

    def __len__(self) -> int:
        return len(self.shard)

    def name(self, index: int) -> str:
        return f"{self.shards[self.shard[index]]} at byte {self.offset[index]}"

    def names_bytes(self) -> list[bytes] | None:
        return ["\n".join(self.shards).encode(), *(column.tobytes() for column in (self.shard, self.offset, self.size))]

    def read(self, index: int) -> bytes:
        # a fresh handle per read: a handle inherited across a worker fork would share its file position
        with open(self.shards[self.shard[index]], "rb") as handle:
            handle.seek(int(self.offset[index]))
            return handle.read(int(self.size[index]))


def listing(reader: ImageSource) -> dict[str, Any] | None:
    """What a resumed run compares to know it reads the same images: their count and a hash of their
    names (a folder's files, the shards' members, a dataset's fingerprint). None for a stream, which
    is pinned to its commit instead."""
    parts = reader.names_bytes()
    if parts is None:
        return None
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return {"images": len(reader), "names_sha256": digest.hexdigest()[:16]}


READERS: dict[str, Callable[[str], ImageSource]] = {"folder": _FolderImages, "hf": _HFImages, "tar": _TarImages, "stream": StreamedImages}


def decode(data: bytes) -> Image.Image:
    """Decode fully to RGB; warnings are silenced so that ``-W error`` cannot turn a damaged image into a crash."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_limited(io.BytesIO(data), DECODERS) as image:  # an image over the pixel limit is skipped like an unreadable one
            return image.convert("RGB")
