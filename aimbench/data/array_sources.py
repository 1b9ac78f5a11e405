"""Sources held as arrays: scikit-learn's bundled digits and IDX files (MNIST-style).

Their revision is a hash of the pixel and label bytes, so a changed copy changes the record.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from aimbench.cards.task_card import SourceSpec
from aimbench.data.images import LabelledImages
from aimbench.data.source_base import LoadedSource, SourceReader, SourceUnavailable, digest
from aimbench.errors import UserError


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
    return LoadedSource(splits, f"scikit-learn {sklearn.__version__} load_digits", digest(images.tobytes(), labels.tobytes()))


BUILTIN_LOADERS: dict[str, Callable[[SourceSpec, Path], LoadedSource]] = {"sklearn-digits": _sklearn_digits}


def _builtin_loader(spec: SourceSpec) -> Callable[[SourceSpec, Path], LoadedSource]:
    loader = BUILTIN_LOADERS.get(spec.options["loader"])
    if loader is None:
        known = ", ".join(sorted(BUILTIN_LOADERS))
        raise UserError(f"unknown built-in loader '{spec.options['loader']}' (known: {known})")
    return loader


def _locate_builtin(spec: SourceSpec, _: Path) -> str:
    _builtin_loader(spec)  # an unknown loader fails here, before anything runs
    return f"built-in {spec.options['loader']}"


BUILTIN = SourceReader(locate=_locate_builtin, load=lambda spec, root: _builtin_loader(spec)(spec, root))


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


def _idx_files(spec: SourceSpec, data_root: Path) -> tuple[Path, dict[str, tuple[Path, Path]]]:
    """The first candidate folder holding every split's image and label file."""
    prefixes: dict[str, str] = spec.options["prefixes"]
    candidates = [data_root / spec.options["dir"], *map(Path, spec.options["fallback_dirs"] or ())]
    for folder in candidates:
        files = {
            split: (folder / f"{prefix}-images-idx3-ubyte.gz", folder / f"{prefix}-labels-idx1-ubyte.gz")
            for split, prefix in prefixes.items()
        }
        if all(p.is_file() for pair in files.values() for p in pair):
            return folder, files
    needed = ", ".join(p.name for pair in files.values() for p in pair)
    raise SourceUnavailable(f"put {needed} in {candidates[0]} (--data-root or AIMBENCH_DATA_ROOT)")


def _idx(spec: SourceSpec, data_root: Path) -> LoadedSource:
    folder, files = _idx_files(spec, data_root)
    splits, chunks = {}, []
    for split, (image_file, label_file) in files.items():
        images, labels = _read_idx(image_file, 3), _read_idx(label_file, 1)
        if len(images) != len(labels):
            raise UserError(f"corrupt data in {folder}: {len(images)} images but {len(labels)} labels for '{split}'")
        splits[split] = LabelledImages.from_arrays(images, labels)
        chunks += [images.tobytes(), labels.tobytes()]
    return LoadedSource(splits, f"idx:{folder}", digest(*chunks))


IDX = SourceReader(locate=lambda spec, root: f"idx:{_idx_files(spec, root)[0]}", load=_idx)
