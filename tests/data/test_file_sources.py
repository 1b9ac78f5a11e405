"""The file-layout readers: WILDS split rules, list files, COCO-style JSON, image folders.

Each layout is written by the test (see ``miniature.py`` and ``wilds_miniature.py``), then read
by the real reader; the assertions are about which image lands in which split with which label.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from miniature import write_miniature
from wilds_miniature import write_wilds

from aimbench.cards.registry import Registry
from aimbench.cards.task_card import SourceSpec
from aimbench.data.sources import READERS
from aimbench.data.wilds_source import FMOW_CATEGORIES
from aimbench.errors import UserError

WILDS_SPLITS = {
    "iwildcam": ("train", "val", "test", "id_val", "id_test"),
    "camelyon17": ("train", "id_val", "val", "test"),
    "rxrx1": ("train", "val", "test", "id_test"),
    "fmow": ("train", "id_val", "id_test", "val", "test"),
}


def wilds_source(dataset: str) -> SourceSpec:
    return SourceSpec("wilds", {"dir": f"{dataset}_release", "dataset": dataset}, {}, (), None)


@pytest.mark.parametrize("dataset", sorted(WILDS_SPLITS))
def test_wilds_rows_land_in_their_official_split_with_their_label(tmp_path: Path, dataset: str) -> None:
    source = wilds_source(dataset)
    counts = {split: i + 1 for i, split in enumerate(WILDS_SPLITS[dataset])}  # a distinct size per split
    write_wilds(source, tmp_path, counts, 2, np.random.default_rng(0))
    loaded = READERS["wilds"].load(source, tmp_path)
    assert {name: len(images) for name, images in loaded.splits.items()} == {s: 2 * n for s, n in counts.items()}
    for images in loaded.splits.values():
        assert images.labels.tolist() == sorted(images.labels.tolist()) and set(images.labels.tolist()) == {0, 1}
        images.image(len(images) - 1)  # the path the rule builds is the file the release holds


def test_fmow_skips_sequestered_rows_and_names_images_by_row_number(tmp_path: Path) -> None:
    source = wilds_source("fmow")
    write_wilds(source, tmp_path, {"train": 1}, 2, np.random.default_rng(0))
    loaded = READERS["wilds"].load(source, tmp_path)
    assert list(loaded.splits) == ["train"]  # the 'seq' row, the 2017 train row and the 2016 val row are in no split
    folder = tmp_path / "fmow_release" / "images"
    assert sorted(p.name for p in folder.iterdir()) == ["rgb_img_3.png", "rgb_img_4.png"]  # rows 0-2 are left out
    assert loaded.splits["train"].labels.tolist() == [FMOW_CATEGORIES.index("airport"), FMOW_CATEGORIES.index("airport_hangar")]


def test_corrupt_wilds_metadata_is_one_user_error(tmp_path: Path) -> None:
    source = wilds_source("fmow")
    (tmp_path / "fmow_release").mkdir()
    (tmp_path / "fmow_release" / "rgb_metadata.csv").write_text("split,timestamp,category\ntrain,2010-01-01T00:00:00Z,unicorn\n")
    with pytest.raises(UserError, match=r"corrupt WILDS metadata .*unknown category 'unicorn'"):
        READERS["wilds"].load(source, tmp_path)


def list_task(tmp_path: Path, name: str):
    task = Registry.load().task(name)
    write_miniature(task, tmp_path, classes=3)
    return task.sources[0]


def test_list_labels_from_folders_follow_the_classes_file(tmp_path: Path) -> None:
    source = list_task(tmp_path, "food101")  # meta/classes.txt order, not the listing's
    classes = tmp_path / "food-101" / "meta" / "classes.txt"
    classes.write_text("class2\nclass0\nclass1\n")
    loaded = READERS["list"].load(source, tmp_path)
    lines = (tmp_path / "food-101" / "meta" / "train.txt").read_text().split()
    expected = [{"class2": 0, "class0": 1, "class1": 2}[line.split("/")[0]] for line in lines]
    assert loaded.splits["train"].labels.tolist() == expected


def test_list_labels_from_a_field_subtract_the_base(tmp_path: Path) -> None:
    source = list_task(tmp_path, "pets")  # "<name> <class id 1..37> <species> <breed>"
    loaded = READERS["list"].load(source, tmp_path)
    first_fields = [line.split() for line in (tmp_path / "oxford-iiit-pet" / "annotations" / "test.txt").read_text().splitlines()]
    assert loaded.splits["test"].labels.tolist() == [int(fields[1]) - 1 for fields in first_fields]


def test_list_line_without_a_label_is_a_user_error_naming_file_and_line(tmp_path: Path) -> None:
    source = list_task(tmp_path, "pets")
    listing = tmp_path / "oxford-iiit-pet" / "annotations" / "test.txt"
    listing.write_text(listing.read_text() + "Abyssinian_999\n")
    with pytest.raises(UserError, match=r"test\.txt: cannot read an image and a label from the line 'Abyssinian_999'"):
        READERS["list"].load(source, tmp_path)


def test_list_naming_a_missing_image_is_a_user_error(tmp_path: Path) -> None:
    source = list_task(tmp_path, "dtd")
    next((tmp_path / "dtd" / "images").rglob("*.jpg")).unlink()
    with pytest.raises(UserError, match="a listed image is missing"):
        READERS["list"].load(source, tmp_path)


def test_missing_list_file_is_unavailable_and_names_it(tmp_path: Path) -> None:
    source = list_task(tmp_path, "dtd")
    (tmp_path / "dtd" / "labels" / "val1.txt").unlink()
    with pytest.raises(Exception, match=r"labels/val1\.txt is missing; unpack the official release"):
        READERS["list"].locate(source, tmp_path)


def test_coco_json_labels_index_sorted_category_ids(tmp_path: Path) -> None:
    source = list_task(tmp_path, "inat-2018")
    annotations = tmp_path / "inat2018" / "train2018.json"
    document = json.loads(annotations.read_text())
    for category in document["categories"]:
        category["id"] += 100  # ids need not start at 0: labels index their sorted order
    for annotation in document["annotations"]:
        annotation["category_id"] += 100
    annotations.write_text(json.dumps(document))
    val = json.loads((tmp_path / "inat2018" / "val2018.json").read_text())
    loaded = READERS["coco_json"].load(source, tmp_path)
    # val keeps ids 0..2, train now has 100..102: six categories in all, train's are the last three
    assert sorted(set(loaded.splits["train"].labels.tolist())) == [3, 4, 5]
    assert sorted(set(loaded.splits["val"].labels.tolist())) == [0, 1, 2] and len(val["images"]) == len(loaded.splits["val"])


def test_coco_json_that_is_not_coco_is_a_user_error(tmp_path: Path) -> None:
    source = list_task(tmp_path, "inat-2018")
    (tmp_path / "inat2018" / "val2018.json").write_text('{"images": []}')
    with pytest.raises(UserError, match="expected COCO-style 'images', 'annotations' and 'categories' lists"):
        READERS["coco_json"].load(source, tmp_path)
