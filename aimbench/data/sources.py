"""Obtaining a task's raw splits from one of its card's sources.

Each source kind either returns the named splits or raises :class:`SourceUnavailable` with the
exact step that would provide the data; the task loader tries a card's sources in order and,
if none is available, reports all the ways at once. Every loaded source carries a revision
(a pinned hub revision, a content hash, or for image folders a listing hash) that is recorded with the results.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aimbench.cards.task_card import SourceSpec, TaskSpec
from aimbench.data.images import LabelledImages
from aimbench.errors import UserError


class SourceUnavailable(Exception):
    """The data for a source is not present; the message says how to provide it."""


@dataclass(frozen=True)
class LoadedSource:
    splits: dict[str, LabelledImages]
    source: str  # human-readable origin, e.g. "idx:/usr/share/datasets/fashion-mnist"
    revision: str  # pinned revision or content hash


def _digest(*chunks: bytes) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return "sha256:" + digest.hexdigest()[:16]


def _sklearn_digits(_: SourceSpec, __: Path) -> LoadedSource:
    import sklearn
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # 0..16 intensities -> 0..255 grey levels
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    cut = len(labels) - 300
    splits = {
        "train": LabelledImages.from_arrays(images[:cut], labels[:cut]),
        "test": LabelledImages.from_arrays(images[cut:], labels[cut:]),
    }
    return LoadedSource(splits, f"scikit-learn {sklearn.__version__} load_digits", _digest(images.tobytes(), labels.tobytes()))


BUILTIN_LOADERS: dict[str, Callable[[SourceSpec, Path], LoadedSource]] = {"sklearn-digits": _sklearn_digits}


def _read_idx(path: Path, expected_dims: int) -> np.ndarray:
    """Parse an IDX file (optionally gzipped) of unsigned bytes."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise UserError(f"corrupt data file {path}: {exc}") from None
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] != 0x08 or raw[3] != expected_dims:
        raise UserError(f"corrupt data file {path}: not an IDX file of {expected_dims}-d unsigned bytes")
    header = 4 + 4 * expected_dims
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(expected_dims))
    if len(raw) != header + int(np.prod(shape)):
        raise UserError(f"corrupt data file {path}: size does not match its header {shape} (truncated?)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _idx(spec: SourceSpec, data_root: Path) -> LoadedSource:
    prefixes: dict[str, str] = spec.options["prefixes"]
    candidates = [data_root / spec.options["dir"], *map(Path, spec.options["fallback_dirs"] or ())]
    for folder in candidates:
        files = {
            split: (folder / f"{prefix}-images-idx3-ubyte.gz", folder / f"{prefix}-labels-idx1-ubyte.gz")
            for split, prefix in prefixes.items()
        }
        if all(p.is_file() for pair in files.values() for p in pair):
            break
    else:
        needed = ", ".join(p.name for pair in files.values() for p in pair)
        raise SourceUnavailable(f"put {needed} in {candidates[0]} (--data-root or AIMBENCH_DATA_ROOT)")
    splits, chunks = {}, []
    for split, (image_file, label_file) in files.items():
        images, labels = _read_idx(image_file, 3), _read_idx(label_file, 1)
        if len(images) != len(labels):
            raise UserError(f"corrupt data in {folder}: {len(images)} images but {len(labels)} labels for '{split}'")
        splits[split] = LabelledImages.from_arrays(images, labels)
        chunks += [images.tobytes(), labels.tobytes()]
    return LoadedSource(splits, f"idx:{folder}", _digest(*chunks))


def _hf_splits(dataset_dict, image_column: str, label_column: str, where: str) -> dict[str, LabelledImages]:
    splits = {}
    for name, dataset in dataset_dict.items():
        missing = {image_column, label_column} - set(dataset.column_names)
        if missing:
            raise UserError(f"{where}: split '{name}' has no column(s) {sorted(missing)}; has {dataset.column_names}")
        images = dataset.select_columns([image_column])
        labels = np.asarray(dataset[label_column], dtype=np.int64)
        splits[name] = LabelledImages(lambda i, d=images: d[i][image_column], labels, np.arange(len(labels)))
    return splits


def _imagefolder(spec: SourceSpec, data_root: Path) -> LoadedSource:
    import datasets

    folder = data_root / spec.options["dir"]
    if not folder.is_dir():
        raise SourceUnavailable(f"put one sub-folder per split, each with one folder per class, in {folder}")
    # a listing hash (path, size, mtime), not a content hash: hashing every image of a large folder
    # on every run would cost more than the evaluation; an image replaced in place still changes it
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    listing = "\n".join(
        f"{p.relative_to(folder)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files
    ).encode()
    loaded = datasets.load_dataset("imagefolder", data_dir=str(folder))
    return LoadedSource(_hf_splits(loaded, "image", "label", str(folder)), f"imagefolder:{folder}", _digest(listing))


def _hf(spec: SourceSpec, _: Path) -> LoadedSource:
    import datasets

    opts = spec.options
    where = f"{opts['id']}@{opts['revision'][:12]}"
    try:
        loaded = datasets.load_dataset(opts["id"], opts["config"], revision=opts["revision"])
    except (ConnectionError, FileNotFoundError, OSError, ValueError) as exc:
        raise SourceUnavailable(
            f"download {where} once with network access (unset HF_DATASETS_OFFLINE) so the HF cache holds it "
            f"[{type(exc).__name__}]"
        ) from None
    return LoadedSource(_hf_splits(loaded, opts["image_column"], opts["label_column"], where), f"hf:{opts['id']}", opts["revision"])


_LOADERS: dict[str, Callable[[SourceSpec, Path], LoadedSource]] = {
    "idx": _idx,
    "imagefolder": _imagefolder,
    "hf": _hf,
}


def load_source(task: TaskSpec, data_root: Path) -> LoadedSource:
    """Try the card's sources in order; fail with every way of providing the data."""
    ways = []
    for source in task.sources:
        if source.kind == "builtin":
            loader = BUILTIN_LOADERS.get(source.options["loader"])
            if loader is None:
                raise UserError(f"{task.card_path}: unknown built-in loader '{source.options['loader']}'")
        else:
            loader = _LOADERS[source.kind]
        try:
            return loader(source, data_root)
        except SourceUnavailable as exc:
            ways.append(str(exc))
            if source.options.get("hint"):
                ways.append(source.options["hint"])
    raise UserError(f"no local copy of task '{task.name}' was found; provide it by one of: " + "; or ".join(ways))
