"""Splits sharing images: counted by key for ``tasks check``, refused for test by identity and by content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aimbench.data.images import LabelledImages, Stored
from aimbench.data.overlap import content_copies, require_disjoint_test, shared
from aimbench.data.source_base import file_images
from aimbench.errors import UserError


def test_shared_counts_each_pair_without_the_ignored_keys() -> None:
    keys = {"train": [b"a", b"b", b""], "val": [b"c"], "test": [b"b", b"", b"c"]}
    assert shared(keys, ignore=[b""]) == {"train&val": 0, "train&test": 1, "val&test": 1}


def test_array_rows_and_hard_links_are_the_same_image(tmp_path: Path) -> None:
    arrays = LabelledImages.from_arrays(np.arange(24, dtype=np.uint8).reshape(6, 2, 2), np.arange(6) % 2)
    require_disjoint_test("t", {"train": arrays.subset(np.arange(3)), "test": arrays.subset(np.arange(3, 6))})
    with pytest.raises(UserError, match="task 't': test shares 1 image"):
        require_disjoint_test("t", {"train": arrays.subset(np.arange(3)), "val": arrays.subset([4]), "test": arrays.subset([2])})
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "b.png").hardlink_to(tmp_path / "a.png")
    (tmp_path / "c.png").write_bytes(b"y")
    files = file_images([tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"], [0, 1, 0])
    require_disjoint_test("t", {"train": files.subset([0]), "test": files.subset([2])})
    with pytest.raises(UserError, match="test shares 1 image.* with val"):
        require_disjoint_test("t", {"train": files.subset([2]), "val": files.subset([0]), "test": files.subset([1])})


def _files(folder: Path, contents: dict[str, bytes]) -> list[Path]:
    for name, content in contents.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return [folder / name for name in contents]


def test_the_same_bytes_under_another_name_are_refused_naming_a_pair(tmp_path: Path) -> None:
    paths = _files(
        tmp_path, {"train/a.png": b"one", "train/b.png": b"two", "val/c.png": b"six", "test/x.png": b"two", "test/y.png": b"ten"}
    )
    files = file_images(paths, [0, 1, 0, 1, 0])
    splits = {"train": files.subset([0, 1]), "val": files.subset([2]), "test": files.subset([3, 4])}
    with pytest.raises(
        UserError, match=r"1 test image\(s\) hold the same bytes as train or val images, e.g. .*test/x.png and train .*train/b.png"
    ):
        require_disjoint_test("t", splits)
    require_disjoint_test("t", splits, allowed=1)  # a card stating the copies its benchmark ships
    rows = LabelledImages.from_arrays(np.stack([np.full((2, 2), v, np.uint8) for v in (1, 2, 3, 2)]), np.arange(4) % 2)
    with pytest.raises(UserError, match=r"1 test image\(s\) .* e.g. row 3 and train row 1"):
        require_disjoint_test("t", {"train": rows.subset([0, 1]), "test": rows.subset([2, 3])})


def _stored(name: str, content: bytes, reads: list[str]) -> Stored:
    def read() -> bytes:
        reads.append(name)
        return content

    return Stored(name, len(content), name, read, len(content))


def test_only_images_of_a_size_both_sides_have_are_read_and_the_budget_bounds_them() -> None:
    reads: list[str] = []
    train = [_stored(f"train{i}", bytes([i]) * (i + 1), reads) for i in range(10)]  # sizes 1..10
    test = [_stored("same", bytes([4]) * 5, reads), _stored("other", b"z" * 50, reads)]
    copies = content_copies(test, {"train": train})
    assert (copies.count, copies.example, copies.compared, copies.candidates) == (1, ("same", "train4", "train"), (1, 1), (1, 1))
    assert sorted(reads) == ["same", "train4"]  # no file of another size is read
    copied = [_stored(f"copy{i}", bytes([i % 10]) * (i % 10 + 1), []) for i in range(400)]  # a copied folder, 40 times over
    sampled = content_copies(copied, {"train": train * 40}, budget=2200)  # 2 x 2,200 bytes to hash: half of each side
    assert sampled.candidates == (400, 400) and sampled.compared[0] < 400 and sampled.compared[1] < 400
    assert 0 < sampled.count <= sampled.compared[0]  # a wholesale copy shows in the sample
