"""Splits sharing images: counted by key for ``tasks check``, refused for test by identity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aimbench.data.images import LabelledImages
from aimbench.data.overlap import require_disjoint_test, shared
from aimbench.data.source_base import file_images
from aimbench.errors import UserError


def test_shared_counts_each_pair_without_the_ignored_keys() -> None:
    keys = {"train": [b"a", b"b", b""], "val": [b"c"], "test": [b"b", b"", b"c"]}
    assert shared(keys, ignore=[b""]) == {"train&val": 0, "train&test": 1, "val&test": 1}


def test_array_rows_and_hard_links_are_the_same_image(tmp_path: Path) -> None:
    arrays = LabelledImages.from_arrays(np.zeros((6, 2, 2), np.uint8), np.arange(6) % 2)
    require_disjoint_test("t", {"train": arrays.subset(np.arange(3)), "test": arrays.subset(np.arange(3, 6))})
    with pytest.raises(UserError, match="task 't': test shares 1 image"):
        require_disjoint_test("t", {"train": arrays.subset(np.arange(3)), "val": arrays.subset([4]), "test": arrays.subset([2])})
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "b.png").hardlink_to(tmp_path / "a.png")
    (tmp_path / "c.png").write_bytes(b"x")  # the same bytes in another file: only tasks check's pixel hashes see it
    files = file_images([tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"], [0, 1, 0])
    require_disjoint_test("t", {"train": files.subset([0]), "test": files.subset([2])})
    with pytest.raises(UserError, match="test shares 1 image.* with val"):
        require_disjoint_test("t", {"train": files.subset([2]), "val": files.subset([0]), "test": files.subset([1])})
