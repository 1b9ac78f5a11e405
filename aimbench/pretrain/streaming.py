"""Streamed sources: Parquet image datasets read over the network (``hf://``, ``s3://``, ``https://``, ...).

``--data hf://datasets/OWNER/NAME`` streams a dataset from the Hugging Face hub without
downloading it first; any fsspec URL works the same way (``s3://bucket/laion/*.parquet`` with
``s3fs`` installed, ``file://`` for a local mirror). The dataset's ``train`` files are used when
it has them; the image column is the first ``datasets.Image`` feature (HF metadata), else the
first column of image structs or bytes.

What is read, and in which order
--------------------------------
A hub location is pinned to a commit when the run starts (``@main`` becomes ``@<sha>``, recorded
in ``config.json``), so a run and its resume read the same files. The unit of reading is a
*block*, one Parquet row group (``datasets`` writes groups of at most 100 MB, some hundreds of
images); the footers give each block's row count, so the index costs a few KB a file and is
cached on disk. Each epoch, on each rank, the order is a pure function of (seed, epoch, rank,
world size), like every other source:

- the blocks are dealt to ranks once, round-robin over a keyed order, so a rank fetches only its
  own share of the stream (1/world of it) and ranks never read the same image in an epoch;
- each epoch a rank walks its blocks in a new keyed order, ``WINDOW_BLOCKS`` at a time, and the
  rows of a window come out in a keyed permutation: a shuffle over windows of thousands of images
  that fetches each block once per epoch (a node-local cache, ``aimbench.pretrain.stream_cache``,
  shares it between ranks and loader workers).

A run that streams therefore resumes exactly at the same world size, and refuses another one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from aimbench.atomic import atomic_write
from aimbench.errors import UserError
from aimbench.paths import cache_dir
from aimbench.pretrain.keyed_order import keyed_order, mix, permute
from aimbench.pretrain.stream_cache import BlockCache

WINDOW_BLOCKS = 16
STREAM = 2  # hash domain (data.py uses 0 and 1)
FETCH_TRIES, FETCH_BACKOFF_S = 4, 2.0  # a block fetch is retried after 2, 4, 8 s before the run stops
HOW_OFFLINE = ("streaming needs the network; or download the dataset once (huggingface-cli download --repo-type dataset "
               "OWNER/NAME --local-dir DIR) and pass --data DIR")  # fmt: skip


def cache_budget_bytes() -> int:
    """``AIMBENCH_STREAM_CACHE_GB`` (default 50) as bytes."""
    text = os.environ.get("AIMBENCH_STREAM_CACHE_GB", "50")
    try:
        gb = float(text)
    except ValueError:
        gb = -1.0
    if not gb > 0:
        raise UserError(f"AIMBENCH_STREAM_CACHE_GB must be a positive number of GB, got '{text}'")
    return int(gb * 2**30)


def is_stream(location: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+.-]*://", location) is not None


def _filesystem(location: str) -> tuple[Any, str]:
    import fsspec

    try:
        return fsspec.core.url_to_fs(location)
    except (ImportError, ValueError) as exc:
        raise UserError(f"--data {location}: cannot open this URL ({exc})") from None


def pin(location: str) -> str:
    """A hub URL with its revision resolved to a commit (``hf://datasets/o/n@<sha>/...``); other URLs as they are."""
    if not location.startswith("hf://"):
        return location
    from huggingface_hub import HfApi
    from huggingface_hub.hf_file_system import HfFileSystem, HfFileSystemResolvedRepositoryPath

    try:
        resolved = HfFileSystem().resolve_path(location)
        if not isinstance(resolved, HfFileSystemResolvedRepositoryPath):  # hf://buckets/...: nothing to pin
            raise ValueError("a bucket has no revisions; only dataset and model repositories can be pinned")
        sha = HfApi().repo_info(resolved.repo_id, repo_type=resolved.repo_type, revision=resolved.revision).sha
        if sha is None:
            raise ValueError("the hub named no commit for this revision")
    except Exception as exc:  # offline mode, no network, unknown repo or revision: all one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--data {location}: cannot resolve it on the Hugging Face hub ({reason}); {HOW_OFFLINE}") from None
    pinned = HfFileSystemResolvedRepositoryPath(resolved.repo_type, resolved.repo_id, sha, resolved.path_in_repo)
    return "hf://" + pinned.unresolve()


def _parquet_files(fs: Any, path: str) -> list[tuple[str, int]]:
    """(name, bytes) of the files a location names: a glob, one file, or every ``.parquet`` below a
    folder (its train split if it has one), from one listing (no request per file)."""
    if any(char in path for char in "*?["):
        found = fs.glob(path, detail=True)
    elif fs.isfile(path):
        found = {path: fs.info(path)}
    else:
        found = {name: info for name, info in fs.find(path, detail=True).items() if name.endswith(".parquet")}
        train = {name: info for name, info in found.items() if any(re.match(r"train([-_.]|$)", part) for part in name.split("/"))}
        found = train or found
    return sorted((name, int(info.get("size") or 0)) for name, info in found.items() if info.get("type", "file") == "file")


def _image_column(schema: Any) -> str:
    import pyarrow as pa

    features = json.loads((schema.metadata or {}).get(b"huggingface", b"{}")).get("info", {}).get("features", {})
    tagged = [name for name, feature in features.items() if isinstance(feature, dict) and feature.get("_type") == "Image"]
    if tagged:
        return tagged[0]
    for field in schema:
        if (pa.types.is_struct(field.type) and field.type.get_field_index("bytes") >= 0) or pa.types.is_binary(field.type):
            return field.name
    raise ValueError(f"no image column (a datasets.Image feature, image structs or bytes) among {schema.names}")


@dataclass(frozen=True)
class StreamIndex:
    """The blocks of a streamed source: file, row group and rows of each, and the image column."""

    files: list[str]
    sizes: list[int]  # bytes of each file when indexed: part of every cached block's name, so a rewritten file is refetched
    block_file: np.ndarray
    block_group: np.ndarray
    block_rows: np.ndarray
    column: str

    @property
    def block_start(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.block_rows)[:-1]]).astype(np.int64)


def build_index(location: str, cache: Path) -> StreamIndex:
    """List the files and read their footers (or reuse the index cached for the same listing)."""
    import pyarrow.parquet as pq

    fs, path = _filesystem(location)
    try:
        listing = _parquet_files(fs, path)
    except Exception as exc:  # fsspec backends raise their own types for "offline", "denied", "not found"
        raise UserError(f"--data {location}: cannot list it ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                        f"{HOW_OFFLINE}") from None  # fmt: skip
    if not listing:
        converted = " (a hub dataset kept in another format has a Parquet copy: hf://datasets/OWNER/NAME@refs%2Fconvert%2Fparquet)"
        raise UserError(f"--data {location}: no .parquet files there{converted if location.startswith('hf://') else ''}")
    key = hashlib.sha256(json.dumps([location, listing]).encode()).hexdigest()[:24]
    saved = cache / key / "index.json"
    if saved.is_file():
        data = json.loads(saved.read_text(encoding="utf-8"))
    else:
        blocks, column = [], None
        for number, (name, _) in enumerate(listing):
            try:
                with fs.open(name, "rb") as handle:
                    meta = pq.ParquetFile(handle).metadata
                    column = column or _image_column(meta.schema.to_arrow_schema())
            except Exception as exc:  # a corrupt footer or a file that vanished: the source cannot be indexed
                raise UserError(f"--data {location}: {name} is not a readable Parquet file ({type(exc).__name__}: {exc})") from None
            blocks += [(number, group, meta.row_group(group).num_rows) for group in range(meta.num_row_groups)]
        data = {"files": [name for name, _ in listing], "sizes": [size for _, size in listing], "blocks": blocks, "column": column}
        text = json.dumps(data)
        atomic_write(saved, lambda handle: handle.write(text.encode("utf-8")))
    file_of, group_of, rows = np.array(data["blocks"], dtype=np.int64).reshape(-1, 3).T
    return StreamIndex(data["files"], data["sizes"], file_of, group_of, rows, data["column"])


class StreamedImages:
    """An ``ImageSource`` over a streamed location, plus the per-rank block order (:meth:`position`)."""

    def __init__(self, location: str) -> None:
        self.location = location
        root = cache_dir() / "stream"
        self.index = build_index(location, root)
        if int(self.index.block_rows.sum()) == 0:
            raise UserError(f"--data {location}: the dataset has no rows")
        self.start = self.index.block_start
        self.cache = BlockCache(root / "blocks", cache_budget_bytes())
        self._fs: tuple[int, Any] | None = None  # (pid, filesystem): never used across a worker fork
        self._names: dict[int, str] = {}

    def __len__(self) -> int:
        return int(self.index.block_rows.sum())

    def _locate(self, index: int) -> tuple[int, int]:
        block = int(np.searchsorted(self.start, index, side="right")) - 1
        return block, index - int(self.start[block])

    def name(self, index: int) -> str:
        block, row = self._locate(index)
        return f"{self.index.files[self.index.block_file[block]]} row group {self.index.block_group[block]} row {row}"

    def names_bytes(self) -> list[bytes] | None:
        return None  # a stream is pinned to its commit (aimbench.pretrain.sources.pinned)

    def _fetch(self, block: int) -> list[bytes | None]:
        """The block's image bytes; a failing read (network, storage) is retried, then stops the run:
        skipping its images would make the stream depend on the network's luck."""
        for attempt in range(FETCH_TRIES):
            try:
                return self._read_block(block)
            except Exception as exc:  # fsspec backends raise their own types
                if attempt == FETCH_TRIES - 1:
                    raise UserError(f"--data {self.location}: cannot fetch {self.name(int(self.start[block]))} after {FETCH_TRIES} tries "
                                    f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                                    f"continue from the last checkpoint with --resume") from None  # fmt: skip
                time.sleep(FETCH_BACKOFF_S * 2**attempt)
        raise AssertionError("unreachable")

    def _read_block(self, block: int) -> list[bytes | None]:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        if self._fs is None or self._fs[0] != os.getpid():
            self._fs = (os.getpid(), _filesystem(self.location)[0])
        with self._fs[1].open(self.index.files[self.index.block_file[block]], "rb") as handle:
            values = pq.ParquetFile(handle).read_row_group(int(self.index.block_group[block]), columns=[self.index.column]).column(0)
        if hasattr(values.type, "get_field_index") and values.type.get_field_index("bytes") >= 0:
            values = pc.struct_field(values, "bytes")
        return values.to_pylist()

    def _cache_name(self, block: int) -> str:
        """The block's name in the disk cache, computed once per block (it is asked for every image read)."""
        if block not in self._names:
            file = int(self.index.block_file[block])
            identity = f"{self.location}|{self.index.files[file]}|{self.index.sizes[file]}|{self.index.block_group[block]}"
            self._names[block] = hashlib.sha256(identity.encode()).hexdigest()[:32]
        return self._names[block]

    def read(self, index: int) -> bytes:
        block, row = self._locate(index)
        data = self.cache.get(self._cache_name(block), lambda: self._fetch(block))[row].as_py()
        if data is None:
            raise ValueError("the row has no image bytes")
        return data

    def position(self, draw: int, seed: int, source: int, rank: int, world: int) -> int:
        """The row index of this rank's draw ``draw`` (module docstring: blocks dealt to ranks, windows shuffled)."""
        epoch, offset = divmod(draw, int(_epoch_plan(self, seed, source, rank, world, -1)[1][-1]))
        order, ends = _epoch_plan(self, seed, source, rank, world, epoch)
        at = int(np.searchsorted(ends, offset, side="right"))
        low = at // WINDOW_BLOCKS * WINDOW_BLOCKS
        high = min(low + WINDOW_BLOCKS, len(order))
        first = int(ends[low - 1]) if low else 0
        shuffled = first + permute(offset - first, int(ends[high - 1]) - first, mix(seed, STREAM, source, rank, epoch, low))
        at = int(np.searchsorted(ends, shuffled, side="right"))
        return int(self.start[order[at]]) + shuffled - (int(ends[at - 1]) if at else 0)


@lru_cache(maxsize=8)
def _epoch_plan(images: StreamedImages, seed: int, source: int, rank: int, world: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(this rank's blocks in epoch ``epoch``'s order, cumulative rows); epoch -1: the dealt blocks, unordered."""
    blocks = len(images.index.block_rows)
    if blocks < world:
        raise UserError(f"--data {images.location}: {blocks} row group(s) cannot be shared by {world} ranks; "
                        f"stream a dataset with more row groups, or use fewer ranks")  # fmt: skip
    mine = keyed_order(blocks, mix(seed, STREAM, source))[rank::world]
    if epoch >= 0:
        mine = mine[keyed_order(len(mine), mix(seed, STREAM, source, rank, epoch))]
    return mine, np.cumsum(images.index.block_rows[mine])
