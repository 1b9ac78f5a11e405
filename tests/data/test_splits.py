"""Forming train / val / test from a loaded source: carving, official val, size checks, limit."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from aimbench.cards.task_card import TaskSpec, parse_task_card
from aimbench.data.images import LabelledImages
from aimbench.data.sources import LoadedSource
from aimbench.data.splits import carve_splits
from aimbench.errors import UserError

# deliberately unbalanced classes; 200 train images, 10 % val -> 20
CLASS_COUNTS = [60, 40, 30, 20, 20, 10, 10, 10]
N_TRAIN, N_TEST = sum(CLASS_COUNTS), 40


def task_spec(
    name: str = "tiny", *, val: dict[str, Any] | None = None, sizes: dict[str, int] | None = None, num_classes: int = len(CLASS_COUNTS)
) -> TaskSpec:
    data = {
        "name": name,
        "version": 1,
        "num_classes": num_classes,
        "metric": "top1",
        "license": "CC0-1.0",
        "sources": [{"kind": "builtin", "loader": "sklearn-digits"}],
        "splits": {"train": "train", "test": "test", "val": val or {"fraction": 0.1, "seed": 0}},
        "expected_sizes": sizes or {"train": 180, "val": 20, "test": N_TEST},
    }
    return parse_task_card(data, Path(f"/cards/tasks/{name}.toml"))


def images_with_ids(n: int, offset: int = 0) -> np.ndarray:
    """(n, 2, 2) uint8 images whose first pixel is their own index (+ offset), mod 256."""
    images = np.zeros((n, 2, 2), dtype=np.uint8)
    images[:, 0, 0] = (np.arange(n) + offset) % 256
    images[:, 1, 1] = (np.arange(n) + offset) // 256
    return images


def pixel_id(image, offset: int = 0) -> int:
    a = np.asarray(image)
    return int(a[0, 0]) + 256 * int(a[1, 1]) - offset


def train_labels() -> np.ndarray:
    # interleave the classes so that class order is not the file order
    labels = np.concatenate([np.full(c, k) for k, c in enumerate(CLASS_COUNTS)])
    return np.random.default_rng(123).permutation(labels)


def loaded_source(extra: dict[str, LabelledImages] | None = None) -> LoadedSource:
    splits = {
        "train": LabelledImages.from_arrays(images_with_ids(N_TRAIN), train_labels()),
        "test": LabelledImages.from_arrays(images_with_ids(N_TEST, 1000), np.arange(N_TEST) % len(CLASS_COUNTS)),
        **(extra or {}),
    }
    return LoadedSource(splits, "test:in-memory", "sha256:feedface")


# ---------------------------------------------------------------------------------------------
# 8. val carved from train


def test_carved_val_is_disjoint_stratified_and_covers_train() -> None:
    loaded = loaded_source()
    splits = carve_splits(task_spec(), loaded)
    assert splits.sizes() == {"train": 180, "val": 20, "test": N_TEST}
    assert (splits.source, splits.revision) == ("test:in-memory", "sha256:feedface")

    train_idx, val_idx = set(splits.train.indices.tolist()), set(splits.val.indices.tolist())
    assert len(train_idx) == 180 and len(val_idx) == 20  # no duplicates
    assert train_idx.isdisjoint(val_idx)
    assert train_idx | val_idx == set(range(N_TRAIN))

    labels = train_labels()
    for split in (splits.train, splits.val):
        np.testing.assert_array_equal(split.labels, labels[split.indices])
        for pos in (0, len(split) - 1):
            assert pixel_id(split.image(pos)) == split.indices[pos]

    val_counts = np.bincount(splits.val.labels, minlength=len(CLASS_COUNTS))
    for cls, count in enumerate(CLASS_COUNTS):
        assert abs(val_counts[cls] - 0.1 * count) <= 1, (cls, val_counts)


def test_carved_val_is_deterministic_and_ignores_global_rng_state() -> None:
    task = task_spec()
    results = []
    for seed in (0, 1, 987654):
        np.random.seed(seed)
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.rand(seed % 7 + 1)  # advance the global stream too
        splits = carve_splits(task, loaded_source())
        results.append((splits.train.indices.copy(), splits.val.indices.copy()))
    for train_idx, val_idx in results[1:]:
        np.testing.assert_array_equal(train_idx, results[0][0])
        np.testing.assert_array_equal(val_idx, results[0][1])


def test_carved_val_depends_on_the_card_seed() -> None:
    zero = carve_splits(task_spec(), loaded_source())
    other = carve_splits(task_spec(val={"fraction": 0.1, "seed": 5}), loaded_source())
    assert set(zero.val.indices.tolist()) != set(other.val.indices.tolist())
    np.testing.assert_array_equal(np.bincount(zero.val.labels), np.bincount(other.val.labels))


def test_carving_never_alters_test() -> None:
    loaded = loaded_source()
    original = loaded.splits["test"]
    splits = carve_splits(task_spec(), loaded)
    np.testing.assert_array_equal(splits.test.indices, np.arange(N_TEST))
    np.testing.assert_array_equal(splits.test.labels, original.labels)
    assert [pixel_id(splits.test.image(i), 1000) for i in range(N_TEST)] == list(range(N_TEST))
    # nor is the loaded source mutated
    np.testing.assert_array_equal(loaded.splits["train"].indices, np.arange(N_TRAIN))
    assert len(loaded.splits["train"]) == N_TRAIN


# ---------------------------------------------------------------------------------------------
# 9. official val split


def test_official_val_split_is_used_as_is() -> None:
    validation = LabelledImages.from_arrays(images_with_ids(16, 2000), np.arange(16) % len(CLASS_COUNTS))
    loaded = loaded_source({"validation": validation})
    task = task_spec(val={"split": "validation"}, sizes={"train": N_TRAIN, "val": 16, "test": N_TEST})
    splits = carve_splits(task, loaded)
    assert splits.sizes() == {"train": N_TRAIN, "val": 16, "test": N_TEST}
    np.testing.assert_array_equal(splits.train.indices, np.arange(N_TRAIN))
    np.testing.assert_array_equal(splits.train.labels, train_labels())
    np.testing.assert_array_equal(splits.val.indices, np.arange(16))
    np.testing.assert_array_equal(splits.val.labels, validation.labels)
    assert [pixel_id(splits.val.image(i), 2000) for i in range(16)] == list(range(16))
    assert task.split_policy()["val"] == "official split 'validation'"


def test_missing_official_split_names_what_exists() -> None:
    task = task_spec(val={"split": "validation"}, sizes={"train": N_TRAIN, "val": 16, "test": N_TEST})
    with pytest.raises(UserError) as info:
        carve_splits(task, loaded_source())
    message = str(info.value)
    assert "'validation'" in message and "test:in-memory" in message
    assert "test, train" in message


# ---------------------------------------------------------------------------------------------
# 10. size and label checks


@pytest.mark.parametrize(
    "sizes",
    [
        {"train": 181, "val": 20, "test": N_TEST},
        {"train": 180, "val": 20, "test": N_TEST + 1},
        {"train": 160, "val": 40, "test": N_TEST},
    ],
)
def test_expected_sizes_mismatch_is_a_user_error(sizes: dict[str, int]) -> None:
    with pytest.raises(UserError) as info:
        carve_splits(task_spec(sizes=sizes), loaded_source())
    message = str(info.value)
    assert "incomplete or a different version" in message
    assert "'tiny'" in message
    assert str({"train": 180, "val": 20, "test": N_TEST}) in message  # what it got
    assert str(sizes) in message  # what the card expects


@pytest.mark.parametrize(("split", "bad"), [("train", -1), ("train", 8), ("test", 8), ("test", 99)])
def test_labels_outside_the_class_range_are_a_user_error(split: str, bad: int) -> None:
    loaded = loaded_source()
    labels = loaded.splits[split].labels.copy()
    # two images of class 0 get the bad label (two, so that stratifying train still works)
    labels[np.flatnonzero(labels == 0)[:2]] = bad
    images = images_with_ids(len(labels), 0 if split == "train" else 1000)  # test keeps its own images
    broken = LoadedSource({**loaded.splits, split: LabelledImages.from_arrays(images, labels)}, loaded.source, loaded.revision)
    with pytest.raises(UserError) as info:
        carve_splits(task_spec(), broken)
    assert f"labels fall outside 0..{len(CLASS_COUNTS) - 1}" in str(info.value)


# ---------------------------------------------------------------------------------------------
# 11. limit


def test_limit_caps_every_split_with_a_fixed_subset() -> None:
    full = carve_splits(task_spec(), loaded_source())
    capped = carve_splits(task_spec(), loaded_source(), limit=12)
    assert capped.sizes() == {"train": 12, "val": 12, "test": 12}
    for name in ("train", "val", "test"):
        whole, part = getattr(full, name), getattr(capped, name)
        assert set(part.indices.tolist()) <= set(whole.indices.tolist())
        assert len(set(part.indices.tolist())) == 12
        raw_labels = train_labels() if name != "test" else np.arange(N_TEST) % len(CLASS_COUNTS)
        np.testing.assert_array_equal(part.labels, raw_labels[part.indices])
        assert pixel_id(part.image(0), 1000 if name == "test" else 0) == part.indices[0]

    np.random.seed(42)
    torch.manual_seed(42)
    again = carve_splits(task_spec(), loaded_source(), limit=12)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(again, name).indices, getattr(capped, name).indices)


def test_limit_is_a_random_subset_not_the_first_n() -> None:
    capped = carve_splits(task_spec(), loaded_source(), limit=10)
    assert capped.test.indices.tolist() != list(range(10))


def test_limit_larger_than_a_split_leaves_it_whole() -> None:
    full = carve_splits(task_spec(), loaded_source())
    capped = carve_splits(task_spec(), loaded_source(), limit=30)  # val has 20, test 40, train 180
    assert capped.sizes() == {"train": 30, "val": 20, "test": 30}
    np.testing.assert_array_equal(capped.val.indices, full.val.indices)
    np.testing.assert_array_equal(capped.val.labels, full.val.labels)
    huge = carve_splits(task_spec(), loaded_source(), limit=10_000)
    assert huge.sizes() == full.sizes()
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(huge, name).indices, getattr(full, name).indices)


def test_limit_is_applied_after_the_size_check() -> None:
    """--limit must not make a complete dataset look incomplete (or hide an incomplete one)."""
    assert carve_splits(task_spec(), loaded_source(), limit=5).sizes() == {"train": 5, "val": 5, "test": 5}
    with pytest.raises(UserError):
        carve_splits(task_spec(sizes={"train": 5, "val": 5, "test": 5}), loaded_source(), limit=5)
