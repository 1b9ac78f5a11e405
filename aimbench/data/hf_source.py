"""Hugging Face datasets pinned to a hub revision, read offline.

Two places are looked at, in order: a snapshot of the dataset repository under
``<data-root>/hf/<owner>/<name>`` (what ``aimbench tasks prepare`` writes with
``huggingface_hub.snapshot_download``, or a copy carried to an offline cluster), then the
Hugging Face hub cache holding that exact revision. ``datasets.load_dataset`` reads either;
nothing here reaches the network.
"""

from __future__ import annotations

import io
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from aimbench.cards.task_card import SourceSpec
from aimbench.data.images import LabelledImages
from aimbench.data.source_base import LoadedSource, SourceReader, SourceUnavailable, digest, open_image
from aimbench.errors import UserError

SNAPSHOT_DIR = "hf"


def snapshot_dir(spec: SourceSpec, data_root: Path) -> Path:
    return data_root / SNAPSHOT_DIR / spec.options["id"]


def hub_cache_snapshot(spec: SourceSpec) -> Path:
    """Where the hub cache keeps this revision's files."""
    from huggingface_hub import constants

    repo = "datasets--" + spec.options["id"].replace("/", "--")
    return Path(constants.HF_HUB_CACHE) / repo / "snapshots" / spec.options["revision"]


def _local_copy(spec: SourceSpec, data_root: Path) -> Path | None:
    """The snapshot under the data root, or the card's ``id`` when it is an absolute folder."""
    candidates = [snapshot_dir(spec, data_root)]
    if Path(spec.options["id"]).is_absolute():
        candidates.append(Path(spec.options["id"]))
    for folder in candidates:
        if folder.is_dir() and any(folder.iterdir()):
            return folder
    return None


def _where(spec: SourceSpec) -> str:
    return f"{spec.options['id']}@{spec.options['revision'][:12]}"


def _locate(spec: SourceSpec, data_root: Path) -> str:
    local = _local_copy(spec, data_root)
    if local is not None:
        return f"hf:{local}"
    if hub_cache_snapshot(spec).is_dir():
        return f"hf:{_where(spec)} (hub cache)"
    raise SourceUnavailable(f"the Hugging Face dataset {_where(spec)} is neither in {snapshot_dir(spec, data_root)} nor in the hub cache")


def _hf_splits(dataset_dict, image_column: str, label_column: str, where: str) -> dict[str, LabelledImages]:
    import datasets

    splits = {}
    for name, dataset in dataset_dict.items():
        missing = {image_column, label_column} - set(dataset.column_names)
        if missing:
            raise UserError(f"{where}: split '{name}' has no column(s) {sorted(missing)}; has {dataset.column_names}")
        images = dataset.select_columns([image_column])
        if isinstance(images.features[image_column], datasets.Image):  # undecoded: the pixel limit is checked first
            images = images.cast_column(image_column, datasets.Image(decode=False))
        labels = np.asarray(dataset[label_column], dtype=np.int64)
        splits[name] = LabelledImages(partial(_decode_row, images, image_column), labels, np.arange(len(labels)))
    return splits


def _decode_row(images: Any, column: str, index: int) -> Image.Image:
    """Row ``index`` of a ``datasets.Dataset`` with an (undecoded) image column, decoded."""
    return _decode(images[index][column])


def _decode(cell: Any) -> Image.Image:
    """An undecoded ``datasets.Image`` cell (its bytes, or the path of its file) through the pixel limit."""
    if isinstance(cell, dict):
        return open_image(io.BytesIO(cell["bytes"]) if cell.get("bytes") else cell["path"])
    return cell  # a column that is not an Image feature holds what the dataset decodes itself


def _load(spec: SourceSpec, data_root: Path) -> LoadedSource:
    import datasets

    opts = spec.options
    local = _local_copy(spec, data_root)
    data_files = opts["data_files"] or None
    try:
        if local is not None:
            loaded = datasets.load_dataset(str(local), opts["config"], data_files=data_files)
        else:
            loaded = datasets.load_dataset(opts["id"], opts["config"], revision=opts["revision"], data_files=data_files)
    except (ConnectionError, FileNotFoundError, OSError, ValueError) as exc:
        raise SourceUnavailable(
            f"download {_where(spec)} once with network access ('aimbench tasks prepare') [{type(exc).__name__}]"
        ) from None
    splits = _hf_splits(loaded, opts["image_column"], opts["label_column"], _where(spec))
    if local is None:
        return LoadedSource(splits, f"hf:{opts['id']}", opts["revision"])
    # a local copy cannot prove its revision: record the card's pin with a listing of its files
    files = sorted(p for p in local.rglob("*") if p.is_file() and ".cache" not in p.parts)
    listing = "\n".join(f"{p.relative_to(local)}:{p.stat().st_size}" for p in files).encode()
    return LoadedSource(splits, f"hf:{local}", f"{opts['revision']}+{digest(listing)}")


HF = SourceReader(locate=_locate, load=_load)
