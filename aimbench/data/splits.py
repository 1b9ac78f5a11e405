"""Forming train / val / test from a loaded source, exactly as the task card says.

val is either the official split or a stratified fraction of train (the card's, else the
protocol's) carved with the card's fixed seed (independent of the run seed, so every run sees the
same val); the carved val is disjoint from train by construction and test is never touched. Split
sizes are checked against the card so a different or incomplete copy of a dataset fails instead of
producing a different number (a val carved by the protocol's fraction: the whole train split).
``limit`` then caps every split with a fixed-seed random subset for smoke runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aimbench.cards.task_card import TaskSpec
from aimbench.data.images import LabelledImages
from aimbench.data.overlap import require_disjoint_test
from aimbench.data.source_base import LoadedSource
from aimbench.errors import UserError

LIMIT_SEED = 0


@dataclass(frozen=True)
class TaskSplits:
    train: LabelledImages
    val: LabelledImages
    test: LabelledImages
    source: str
    revision: str

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _split(loaded: LoadedSource, name: str, task: TaskSpec) -> LabelledImages:
    if name not in loaded.splits:
        raise UserError(f"task '{task.name}': split '{name}' not in {loaded.source} (has {', '.join(sorted(loaded.splits))})")
    return loaded.splits[name]


def _cap(images: LabelledImages, limit: int | None) -> LabelledImages:
    if limit is None or len(images) <= limit:
        return images
    rng = np.random.default_rng(LIMIT_SEED)
    return images.subset(np.sort(rng.choice(len(images), size=limit, replace=False)))


def _carve_val(task: TaskSpec, train: LabelledImages, fraction: float) -> tuple[LabelledImages, LabelledImages]:
    """A stratified val of ``fraction`` of train, by the card's seed; a class too small to stratify is one error naming it."""
    from sklearn.model_selection import train_test_split  # scipy with it: a second, only when splits are carved

    classes, counts = np.unique(train.labels, return_counts=True)
    smallest = int(np.argmin(counts)) if len(counts) else None
    if smallest is not None and counts[smallest] < 2:
        raise UserError(f"task '{task.name}': class {classes[smallest]} has {counts[smallest]} train image; carving a stratified val "
                        f"(fraction {fraction:g}) needs at least 2 per class: add images to it or give the card a val split")  # fmt: skip
    try:
        train_pos, val_pos = train_test_split(np.arange(len(train)), test_size=fraction, random_state=task.val.seed, stratify=train.labels)
    except ValueError as exc:  # too few images for a val holding every class once
        raise UserError(f"task '{task.name}': cannot carve a stratified val of fraction {fraction:g} from {len(train)} train images "
                        f"in {len(classes)} classes: {exc}") from None  # fmt: skip
    return train.subset(np.sort(train_pos)), train.subset(np.sort(val_pos))


def carve_splits(task: TaskSpec, loaded: LoadedSource, limit: int | None = None, val_fraction: float | None = None) -> TaskSplits:
    """The task's splits; ``val_fraction`` (the protocol's) carves val when the card gives neither split nor fraction."""
    train = _split(loaded, task.train_split, task)
    test = _split(loaded, task.test_split, task)
    by_protocol = task.val.split is None and task.val.fraction is None
    sizes = {"train": len(train), "test": len(test)}  # what the card states when the protocol carves val
    if task.val.split is not None:
        val = _split(loaded, task.val.split, task)
    else:
        fraction = val_fraction if by_protocol else task.val.fraction
        if fraction is None:
            raise UserError(f"task '{task.name}' takes its val fraction from the protocol, and none was given")
        train, val = _carve_val(task, train, fraction)
    require_disjoint_test(task.name, {"train": train, "val": val, "test": test}, loaded.shared_test_images)
    if not by_protocol:
        sizes = {"train": len(train), "val": len(val), "test": len(test)}
    if sizes != task.expected_sizes:
        raise UserError(
            f"task '{task.name}': {loaded.source} gives split sizes {sizes}, the card expects "
            f"{task.expected_sizes}; the local copy is incomplete or a different version"
        )
    for name, split in (("train", train), ("val", val), ("test", test)):
        if len(split.labels) and (split.labels.min() < 0 or split.labels.max() >= task.num_classes):
            raise UserError(f"task '{task.name}': {name} labels fall outside 0..{task.num_classes - 1}")
    return TaskSplits(_cap(train, limit), _cap(val, limit), _cap(test, limit), loaded.source, loaded.revision)
