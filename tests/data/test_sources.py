"""Task data sources: built-in digits, IDX files, image folders and (local) Hugging Face datasets.

Every test makes its own tiny data under ``tmp_path``; nothing touches the network.
"""

from __future__ import annotations

import gzip
import json
import socket
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_card
from PIL import Image

from aimbench.cards.registry import CARDS_ENV, Registry
from aimbench.cards.task_card import TaskSpec
from aimbench.data import load_task
from aimbench.data.sources import load_source
from aimbench.errors import UserError

TRAIN_N, TEST_N, CLASSES, H, W = 30, 12, 3, 5, 4  # non-square so that (rows, cols) order shows


@pytest.fixture(autouse=True)
def _no_user_cards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CARDS_ENV, raising=False)


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep ``datasets``' cache inside the test's tmp dir and force offline mode."""
    datasets = pytest.importorskip("datasets")
    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list:
    """Record (and refuse) any attempt to open a network connection."""
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", lambda self, *a, **k: refuse(*a))
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


# ---------------------------------------------------------------------------------------------
# helpers


def toml_str(value: object) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def task_card(
    name: str, sources: str, sizes: tuple[int, int, int], num_classes: int = CLASSES, val: str = "{ fraction = 0.2, seed = 0 }"
) -> str:
    return f"""
name = "{name}"
version = 1
description = "tiny test task"
num_classes = {num_classes}
metric = "top1"
license = "CC0-1.0"

{sources}

[splits]
train = "train"
test = "test"
val = {val}

[expected_sizes]
train = {sizes[0]}
val = {sizes[1]}
test = {sizes[2]}
"""


def idx_source(dir_name: str = "tiny", fallback_dirs: list[Path] | None = None, hint: str | None = None) -> str:
    fallbacks = ", ".join(toml_str(p) for p in fallback_dirs or [])
    lines = [
        "[[sources]]",
        'kind = "idx"',
        f"dir = {toml_str(dir_name)}",
        f"fallback_dirs = [{fallbacks}]",
        'prefixes = { train = "train", test = "t10k" }',
    ]
    if hint:
        lines.append(f"hint = {toml_str(hint)}")
    return "\n".join(lines) + "\n"


def load_card(tmp_path: Path, name: str, text: str) -> TaskSpec:
    cards = tmp_path / "cards"
    write_card(cards, "tasks", name, text)
    return Registry.load([cards]).task(name)


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic 0x0000 08 <ndim>, big-endian dims, payload."""
    assert array.dtype == np.uint8
    magic = struct.pack(">I", 0x0800 | array.ndim)
    dims = b"".join(struct.pack(">I", d) for d in array.shape)
    return magic + dims + array.tobytes()


def make_idx_arrays(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {
        "train": (rng.integers(0, 256, (TRAIN_N, H, W), dtype=np.uint8), (np.arange(TRAIN_N) % CLASSES).astype(np.uint8)),
        "t10k": (rng.integers(0, 256, (TEST_N, H, W), dtype=np.uint8), (np.arange(TEST_N) % CLASSES).astype(np.uint8)),
    }


def write_idx_dir(folder: Path, arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for prefix, (images, labels) in arrays.items():
        for kind, array, dims in (("images", images, 3), ("labels", labels, 1)):
            path = folder / f"{prefix}-{kind}-idx{dims}-ubyte.gz"
            path.write_bytes(gzip.compress(idx_bytes(array)))
            paths[f"{prefix}-{kind}"] = path
    return paths


IDX_SIZES = (24, 6, TEST_N)  # 20 % of 30 carved for val


def idx_task(tmp_path: Path, **kwargs) -> TaskSpec:
    return load_card(tmp_path, "tiny-idx", task_card("tiny-idx", idx_source(**kwargs), IDX_SIZES))


# ---------------------------------------------------------------------------------------------
# 1. built-in digits


def test_builtin_digits_sizes_images_source_and_stable_revision(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    task = Registry.load().task("digits")
    first = load_task(task, tmp_path / "unused-data-root")
    assert first.sizes() == {"train": 1347, "val": 150, "test": 300}
    assert "scikit-learn" in first.source
    assert first.revision.startswith("sha256:") and len(first.revision) > len("sha256:")
    for split in (first.train, first.val, first.test):
        image = split.image(0)
        assert isinstance(image, Image.Image)
        assert image.size == (8, 8)

    # test = the last 300 digits, untouched; pixels are the 0..16 scale mapped onto 0..255
    bunch = load_digits()
    np.testing.assert_array_equal(first.test.labels, bunch.target[-300:])
    expected = np.round(bunch.images[-300] * 255.0 / 16.0).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(first.test.image(0)), expected)
    assert max(np.asarray(first.train.image(i)).max() for i in range(50)) == 255
    # train and val come from the first 1497 images only
    assert set(first.train.indices) | set(first.val.indices) == set(range(1497))

    second = load_task(task, tmp_path / "unused-data-root")
    assert second.revision == first.revision
    np.testing.assert_array_equal(second.val.indices, first.val.indices)


# ---------------------------------------------------------------------------------------------
# 2. IDX loader


def test_idx_source_round_trips_pixels_and_labels(tmp_path: Path) -> None:
    arrays = make_idx_arrays()
    data_root = tmp_path / "data"
    write_idx_dir(data_root / "tiny", arrays)
    splits = load_task(idx_task(tmp_path), data_root)

    assert splits.sizes() == {"train": 24, "val": 6, "test": 12}
    assert splits.source == f"idx:{data_root / 'tiny'}"
    train_images, train_labels = arrays["train"]
    for split in (splits.train, splits.val):
        for pos in range(len(split)):
            raw = int(split.indices[pos])
            image = split.image(pos)
            assert image.size == (W, H)
            np.testing.assert_array_equal(np.asarray(image), train_images[raw])
            assert split.labels[pos] == train_labels[raw]
    assert split.labels.dtype == np.int64
    test_images, test_labels = arrays["t10k"]
    np.testing.assert_array_equal(splits.test.indices, np.arange(TEST_N))
    np.testing.assert_array_equal(splits.test.labels, test_labels)
    for pos in range(TEST_N):
        np.testing.assert_array_equal(np.asarray(splits.test.image(pos)), test_images[pos])


def test_idx_revision_is_a_content_hash(tmp_path: Path) -> None:
    arrays = make_idx_arrays()
    data_root = tmp_path / "data"
    write_idx_dir(data_root / "tiny", arrays)
    task = idx_task(tmp_path)
    first = load_task(task, data_root).revision
    assert first.startswith("sha256:")
    assert load_task(task, data_root).revision == first  # stable

    # the same content in another folder has the same revision
    write_idx_dir(tmp_path / "elsewhere" / "tiny", arrays)
    assert load_task(task, tmp_path / "elsewhere").revision == first

    # one pixel byte of one test image changes -> another revision
    test_images = arrays["t10k"][0].copy()
    test_images[3, 2, 1] ^= 0x01
    write_idx_dir(data_root / "tiny", {**arrays, "t10k": (test_images, arrays["t10k"][1])})
    changed = load_task(task, data_root)
    assert changed.revision != first
    assert np.asarray(changed.test.image(3))[2, 1] == test_images[3, 2, 1]


# ---------------------------------------------------------------------------------------------
# 3. fallback order


def test_idx_falls_back_when_data_root_has_no_copy(tmp_path: Path) -> None:
    arrays = make_idx_arrays()
    empty_fallback, fallback = tmp_path / "nowhere", tmp_path / "system" / "tiny"
    write_idx_dir(fallback, arrays)
    task = idx_task(tmp_path, fallback_dirs=[empty_fallback, fallback])
    splits = load_task(task, tmp_path / "data")  # <data_root>/tiny does not exist
    assert splits.source == f"idx:{fallback}"
    np.testing.assert_array_equal(np.asarray(splits.test.image(0)), arrays["t10k"][0][0])


def test_idx_prefers_data_root_over_fallback(tmp_path: Path) -> None:
    data_root, fallback = tmp_path / "data", tmp_path / "system" / "tiny"
    write_idx_dir(data_root / "tiny", make_idx_arrays(seed=1))
    write_idx_dir(fallback, make_idx_arrays(seed=2))
    splits = load_task(idx_task(tmp_path, fallback_dirs=[fallback]), data_root)
    assert splits.source == f"idx:{data_root / 'tiny'}"
    np.testing.assert_array_equal(np.asarray(splits.test.image(0)), make_idx_arrays(seed=1)["t10k"][0][0])


def test_idx_incomplete_data_root_copy_falls_back(tmp_path: Path) -> None:
    data_root, fallback = tmp_path / "data", tmp_path / "system" / "tiny"
    paths = write_idx_dir(data_root / "tiny", make_idx_arrays(seed=1))
    paths["t10k-labels"].unlink()
    write_idx_dir(fallback, make_idx_arrays(seed=2))
    splits = load_task(idx_task(tmp_path, fallback_dirs=[fallback]), data_root)
    assert splits.source == f"idx:{fallback}"


# ---------------------------------------------------------------------------------------------
# 4. corrupt IDX files


def _bad_magic(payload: bytes) -> bytes:
    return gzip.compress(b"\x00\x00\x09" + payload[3:])  # 0x09 = signed byte, not unsigned


def _wrong_ndim(payload: bytes) -> bytes:
    return gzip.compress(payload[:3] + b"\x02" + payload[4:])


def _truncated_payload(payload: bytes) -> bytes:
    return gzip.compress(payload[:-7])


def _not_gzip(payload: bytes) -> bytes:
    return payload  # plain IDX bytes in a .gz file


def _truncated_gzip(payload: bytes) -> bytes:
    whole = gzip.compress(payload)
    return whole[: len(whole) // 2]


def _empty(payload: bytes) -> bytes:
    return b""


def _header_only(payload: bytes) -> bytes:
    return gzip.compress(payload[:2])


@pytest.mark.parametrize(
    ("file_key", "corrupt"),
    [
        ("t10k-images", _bad_magic),
        ("train-labels", _bad_magic),
        ("train-images", _wrong_ndim),
        ("t10k-images", _truncated_payload),
        ("train-labels", _truncated_payload),
        ("train-images", _not_gzip),
        ("t10k-labels", _truncated_gzip),
        ("train-images", _empty),
        ("t10k-labels", _header_only),
    ],
)
def test_corrupt_idx_file_is_a_user_error_naming_the_file(tmp_path: Path, file_key: str, corrupt) -> None:
    data_root = tmp_path / "data"
    paths = write_idx_dir(data_root / "tiny", make_idx_arrays())
    target = paths[file_key]
    target.write_bytes(corrupt(gzip.decompress(target.read_bytes())))
    with pytest.raises(UserError) as info:
        load_task(idx_task(tmp_path), data_root)
    assert str(target) in str(info.value)
    assert "corrupt" in str(info.value)


def test_damaged_deflate_stream_is_a_user_error(tmp_path: Path) -> None:
    data_root = tmp_path / "data"
    paths = write_idx_dir(data_root / "tiny", make_idx_arrays())
    target = paths["train-images"]
    good = target.read_bytes()
    # keep the 10-byte gzip header and the 8-byte trailer, garble the compressed blocks
    target.write_bytes(good[:10] + b"\xff" * (len(good) - 18) + good[-8:])
    with pytest.raises(UserError) as info:
        load_task(idx_task(tmp_path), data_root)
    assert str(target) in str(info.value)


def test_idx_images_and_labels_disagreeing_in_count_is_a_user_error(tmp_path: Path) -> None:
    arrays = make_idx_arrays()
    images, labels = arrays["train"]
    data_root = tmp_path / "data"
    write_idx_dir(data_root / "tiny", {**arrays, "train": (images, labels[:-1])})
    with pytest.raises(UserError) as info:
        load_task(idx_task(tmp_path), data_root)
    message = str(info.value)
    assert str(data_root / "tiny") in message
    assert f"{TRAIN_N} images but {TRAIN_N - 1} labels" in message


# ---------------------------------------------------------------------------------------------
# 5. missing data everywhere


def test_missing_idx_data_explains_how_to_provide_it(tmp_path: Path) -> None:
    hint = "install the test package: apt-get install dataset-tiny"
    task = idx_task(tmp_path, fallback_dirs=[tmp_path / "absent"], hint=hint)
    data_root = tmp_path / "data"
    with pytest.raises(UserError) as info:
        load_task(task, data_root)
    message = str(info.value)
    assert "tiny-idx" in message
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert name in message
    assert str(data_root / "tiny") in message
    assert "--data-root" in message or "AIMBENCH_DATA_ROOT" in message
    assert hint in message


def test_missing_hf_dataset_offline_fails_fast_without_network(tmp_path: Path, hf_cache: Path, no_network: list) -> None:
    sources = (
        idx_source(hint="ask a colleague for the files")
        + """
[[sources]]
kind = "hf"
id = "aimbench-tests/no-such-dataset-xyz"
revision = "0123456789abcdef0123456789abcdef01234567"
image_column = "image"
label_column = "label"
"""
    )
    task = load_card(tmp_path, "tiny-both", task_card("tiny-both", sources, IDX_SIZES))
    start = time.monotonic()
    with pytest.raises(UserError) as info:
        load_task(task, tmp_path / "data")
    assert time.monotonic() - start < 5.0
    assert no_network == []
    message = str(info.value)
    # both ways, in card order
    idx_at, hf_at = message.index("t10k-images-idx3-ubyte.gz"), message.index("aimbench-tests/no-such-dataset-xyz")
    assert idx_at < hf_at
    assert "ask a colleague for the files" in message
    assert "aimbench tasks prepare tiny-both" in message and "hub cache" in message
    assert "HF_DATASETS_OFFLINE" in message
    assert "@0123456789ab" in message  # the pinned revision is shown


def test_missing_imagefolder_names_the_folder(tmp_path: Path) -> None:
    sources = '[[sources]]\nkind = "imagefolder"\ndir = "pets"\nhint = "unpack pets.zip there"\n'
    task = load_card(tmp_path, "tiny-folder", task_card("tiny-folder", sources, (1, 1, 1)))
    with pytest.raises(UserError) as info:
        load_task(task, tmp_path / "data")
    assert str(tmp_path / "data" / "pets") in str(info.value)
    assert "unpack pets.zip there" in str(info.value)


def test_first_available_source_wins(tmp_path: Path) -> None:
    """A missing first source is skipped silently when a later one has the data."""
    write_idx_dir(tmp_path / "data" / "second", make_idx_arrays())
    sources = idx_source("first") + idx_source("second")
    task = load_card(tmp_path, "tiny-two", task_card("tiny-two", sources, IDX_SIZES))
    assert load_task(task, tmp_path / "data").source == f"idx:{tmp_path / 'data' / 'second'}"


# ---------------------------------------------------------------------------------------------
# 6. image folder

CLASS_NAMES = ("cat", "dog", "emu")  # sorted: labels 0, 1, 2


def write_png(path: Path, value: int, size: tuple[int, int] = (6, 5)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, dtype=np.uint8)).save(path)


def write_imagefolder(root: Path, per_class: dict[str, int]) -> None:
    """Pixel value = 50 * class index + 10 * split index + image number, so images identify themselves."""
    for s, (split, count) in enumerate(per_class.items()):
        for c, name in enumerate(CLASS_NAMES):
            for i in range(count):
                write_png(root / split / name / f"{i:03d}.png", 50 * c + 10 * s + i)


def imagefolder_task(tmp_path: Path, sizes: tuple[int, int, int]) -> TaskSpec:
    sources = '[[sources]]\nkind = "imagefolder"\ndir = "pets"\n'
    return load_card(tmp_path, "tiny-pets", task_card("tiny-pets", sources, sizes, val="{ fraction = 0.25, seed = 0 }"))


def test_imagefolder_labels_come_from_folder_names(tmp_path: Path, hf_cache: Path, no_network: list) -> None:
    folder = tmp_path / "data" / "pets"
    write_imagefolder(folder, {"train": 4, "test": 2})
    splits = load_task(imagefolder_task(tmp_path, (9, 3, 6)), tmp_path / "data")
    assert splits.sizes() == {"train": 9, "val": 3, "test": 6}
    assert splits.source == f"imagefolder:{folder}"
    assert no_network == []
    for split_index, split in ((0, splits.train), (0, splits.val), (1, splits.test)):
        for pos in range(len(split)):
            pixels = np.asarray(split.image(pos))
            assert pixels.shape == (6, 5)
            value = int(pixels[0, 0])
            cls, rest = divmod(value, 50)
            assert rest // 10 == split_index
            assert split.labels[pos] == cls
    np.testing.assert_array_equal(np.bincount(splits.test.labels), [2, 2, 2])
    np.testing.assert_array_equal(np.bincount(splits.val.labels), [1, 1, 1])


def test_imagefolder_revision_changes_when_a_file_is_added(tmp_path: Path, hf_cache: Path) -> None:
    folder = tmp_path / "data" / "pets"
    write_imagefolder(folder, {"train": 4, "test": 2})
    task = imagefolder_task(tmp_path, (9, 3, 6))
    first = load_source(task, tmp_path / "data")
    assert first.revision.startswith("sha256:")
    assert load_source(task, tmp_path / "data").revision == first.revision

    write_png(folder / "train" / "emu" / "new.png", 77)
    second = load_source(task, tmp_path / "data")
    assert second.revision != first.revision
    assert len(second.splits["train"]) == len(first.splits["train"]) + 1  # not a stale cache
    assert len(second.splits["test"]) == len(first.splits["test"])


def test_imagefolder_revision_changes_when_an_image_changes_in_place(tmp_path: Path, hf_cache: Path) -> None:
    folder = tmp_path / "data" / "pets"
    for split in ("train", "test"):
        for c, name in enumerate(CLASS_NAMES):
            for i in range(4):
                path = folder / split / name / f"{i}.bmp"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((6, 5), 40 * c + i, dtype=np.uint8)).save(path)
    task = imagefolder_task(tmp_path, (9, 3, 12))
    first = load_source(task, tmp_path / "data")
    target = folder / "train" / "cat" / "0.bmp"
    size = target.stat().st_size
    Image.fromarray(np.full((6, 5), 250, dtype=np.uint8)).save(target)
    assert target.stat().st_size == size
    second = load_source(task, tmp_path / "data")
    train = second.splits["train"]
    assert 250 in {int(np.asarray(train.image(i))[0, 0]) for i in range(len(train))}  # the data did change
    assert second.revision != first.revision


# ---------------------------------------------------------------------------------------------
# 7. Hugging Face source, offline, from a local directory of parquet files


def write_hf_parquet(root: Path, counts: dict[str, int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as HFImage

    arrays = {}
    rng = np.random.default_rng(7)
    for split, count in counts.items():
        images = rng.integers(0, 256, (count, 3, 4), dtype=np.uint8)
        labels = np.arange(count) % 2
        dataset = Dataset.from_dict(
            {"img": [Image.fromarray(a) for a in images], "lbl": labels.tolist()},
            features=Features({"img": HFImage(), "lbl": ClassLabel(names=["even", "odd"])}),
        )
        (root / "data").mkdir(parents=True, exist_ok=True)
        dataset.to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
        arrays[split] = (images, labels)
    return arrays


def hf_source(dataset_dir: Path, image_column: str = "img", label_column: str = "lbl", revision: str = "main") -> str:
    return f"""
[[sources]]
kind = "hf"
id = {toml_str(dataset_dir)}
revision = {toml_str(revision)}
image_column = {toml_str(image_column)}
label_column = {toml_str(label_column)}
"""


def hf_task(tmp_path: Path, dataset_dir: Path, **kwargs) -> TaskSpec:
    card = task_card("tiny-hf", hf_source(dataset_dir, **kwargs), (9, 3, 4), num_classes=2, val="{ fraction = 0.25, seed = 0 }")
    return load_card(tmp_path, "tiny-hf", card)


@pytest.mark.parametrize("revision", ["main", "0123456789abcdef0123456789abcdef01234567"])
def test_hf_source_loads_a_local_parquet_dataset(tmp_path: Path, hf_cache: Path, no_network: list, revision: str) -> None:
    """``datasets.load_dataset`` ignores ``revision`` for a local directory; the card's value is recorded."""
    dataset_dir = tmp_path / "hf-tiny"
    arrays = write_hf_parquet(dataset_dir, {"train": 12, "test": 4})
    splits = load_task(hf_task(tmp_path, dataset_dir, revision=revision), tmp_path / "data")
    assert no_network == []
    assert splits.sizes() == {"train": 9, "val": 3, "test": 4}
    assert splits.source == f"hf:{dataset_dir}"
    assert splits.revision.startswith(f"{revision}+sha256:")  # the card's pin plus a listing of the local copy
    images, labels = arrays["train"]
    for split in (splits.train, splits.val):
        for pos in range(len(split)):
            raw = int(split.indices[pos])
            np.testing.assert_array_equal(np.asarray(split.image(pos)), images[raw])
            assert split.labels[pos] == labels[raw]
    np.testing.assert_array_equal(splits.test.labels, arrays["test"][1])
    np.testing.assert_array_equal(np.asarray(splits.test.image(3)), arrays["test"][0][3])
    assert splits.test.labels.dtype == np.int64


def test_hf_source_wrong_columns_is_a_user_error_naming_them(tmp_path: Path, hf_cache: Path) -> None:
    dataset_dir = tmp_path / "hf-tiny"
    write_hf_parquet(dataset_dir, {"train": 12, "test": 4})
    task = hf_task(tmp_path, dataset_dir, image_column="image", label_column="label")
    with pytest.raises(UserError) as info:
        load_task(task, tmp_path / "data")
    message = str(info.value)
    assert "'image'" in message and "'label'" in message  # the missing columns
    assert "'img'" in message and "'lbl'" in message  # the columns it has
    assert str(dataset_dir) in message


def test_hf_source_one_wrong_column_names_only_that_one(tmp_path: Path, hf_cache: Path) -> None:
    dataset_dir = tmp_path / "hf-tiny"
    write_hf_parquet(dataset_dir, {"train": 12, "test": 4})
    with pytest.raises(UserError) as info:
        load_task(hf_task(tmp_path, dataset_dir, label_column="target"), tmp_path / "data")
    message = str(info.value)
    assert "no column(s) ['target']" in message
