"""Every aim15 card end to end on a miniature copy written in the card's own source layout.

For each of the 15 benchmarks a few tiny images per class are written where the official release
(or the hub repository) puts them; then ``tasks check``, loading, split carving and a linear
probe of a micro ViT run on it offline, through the shipped card with only its class count and
split sizes changed to the miniature's. Plus consistency checks of the shipped cards themselves.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import write_card
from miniature import miniature_card, write_miniature

from aimbench.cards.registry import Registry
from aimbench.data import load_task
from aimbench.data.check import READY, check_task
from aimbench.launch.base import PlannedCell
from aimbench.launch.cells import plan_cells
from aimbench.launch.options import RunOptions
from aimbench.launch.run_cell import run_cell
from aimbench.store import read_record

PAPER_ORDER = [
    "imagenet-1k",
    "inat-2018",
    "cifar10",
    "cifar100",
    "food101",
    "dtd",
    "pets",
    "cars",
    "iwildcam",
    "camelyon17",
    "pcam",
    "rxrx1",
    "eurosat",
    "fmow",
    "infograph",
]  # fmt: skip  (the columns of Table 6 in the AIM paper)
PAPER_CLASSES = {
    "imagenet-1k": 1000, "inat-2018": 8142, "cifar10": 10, "cifar100": 100, "food101": 101, "dtd": 47, "pets": 37,
    "cars": 196, "iwildcam": 182, "camelyon17": 2, "pcam": 2, "rxrx1": 1139, "eurosat": 10, "fmow": 62, "infograph": 345,
}  # fmt: skip


def test_aim15_is_the_paper_order_and_all_is_an_alias() -> None:
    registry = Registry.load()
    assert registry.suites()["aim15"] == PAPER_ORDER
    assert [t.name for t in registry.expand_tasks(["all"])] == PAPER_ORDER


@pytest.mark.parametrize("name", PAPER_ORDER)
def test_shipped_card_is_consistent(name: str) -> None:
    task = Registry.load().task(name)
    assert task.num_classes == PAPER_CLASSES[name]
    assert task.license and task.citation and task.homepage
    sizes = task.expected_sizes
    if task.val.fraction is not None:  # the carve: scikit-learn takes ceil(fraction * n) for val
        whole = sizes["train"] + sizes["val"]
        assert sizes["val"] == math.ceil(task.val.fraction * whole)
        assert sizes["val"] >= task.num_classes  # a stratified val can hold every class
    assert min(sizes.values()) >= task.num_classes or name == "inat-2018"
    for source in task.sources:
        if source.kind == "hf":
            assert len(source.options["revision"]) == 40  # pinned to a commit, not a branch
        for download in source.downloads:
            assert download.url.startswith("https://") or download.url.startswith("http://data.vision.ee.ethz.ch")


@pytest.mark.parametrize("name", PAPER_ORDER)
def test_miniature_copy_checks_loads_and_probes(name: str, tmp_path: Path, tiny_cards: Path, no_network) -> None:
    shipped = Registry.load().task(name)
    classes = min(3, shipped.num_classes)
    root = tmp_path / "data"
    sizes = write_miniature(shipped, root, classes)
    write_card(tiny_cards, "tasks", name, miniature_card(shipped, classes, sizes))
    registry = Registry.load([tiny_cards])
    task = registry.task(name)
    assert task.sources == shipped.sources and task.test_split == shipped.test_split

    report = check_task(task, root)
    assert report.status == READY, report.notes
    assert report.sizes == sizes and report.classes_in_train == classes
    assert report.unreadable == 0 and set(report.duplicates.values()) == {0}

    splits = load_task(task, root)
    assert splits.sizes() == sizes
    for split in (splits.train, splits.val, splits.test):
        assert sorted(set(split.labels.tolist())) == list(range(classes))
        assert np.asarray(split.image(0)).shape[:2] == (8, 8)

    (cell,) = plan_cells(registry, ["micro-cls"], [name], "linear", [0], layers="last", overrides={"epochs": 2}, protocol="aim-v1")
    planned = PlannedCell(cell=cell, identity=cell.identity(registry), skip=False)
    options = RunOptions(results_dir=tmp_path / "results", data_root=root, card_dirs=(tiny_cards,), device="cpu")
    record = read_record(run_cell(planned, options))
    assert record["task"] == name and record["n_test"] == sizes["test"]
    assert record["dataset_source"] == report.source
    assert 0.0 <= record["best_test_score"] <= 1.0
    assert record["secondary_metrics"] == list(shipped.secondary_metrics)  # iWildCam: WILDS' macro F1
    assert set(record["best_test_secondary"]) == set(shipped.secondary_metrics)
    assert all(0.0 <= v <= 1.0 for v in record["best_test_secondary"].values())
