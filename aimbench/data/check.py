"""``aimbench tasks check``: is a local copy of a task complete and sound?

A copy is checked the way an evaluation would use it: the first present source is loaded and
carved into the card's splits (which checks every split size and the label range), then every
image is decoded once, counting the unreadable ones and those over the pixel limit
(``AIMBENCH_MAX_IMAGE_PIXELS``, never decoded) and hashing the pixels so that images shared
between splits show up. Decoding runs in DataLoader workers; nothing is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset

from aimbench.cards.task_card import TaskSpec
from aimbench.data.images import ImageTooLarge, LabelledImages, bit_depth, max_image_pixels
from aimbench.data.overlap import shared
from aimbench.data.sources import TaskNotReady, load_source, locate_source
from aimbench.data.splits import carve_splits
from aimbench.errors import UserError

READY, WARNING, MISSING, BROKEN = "ready", "ready with warnings", "missing", "broken"
UNREADABLE = b""
TOO_LARGE = b"too large"  # never a 16-byte pixel hash


@dataclass
class CheckReport:
    task: str
    status: str
    source: str = ""
    sizes: dict[str, int] = field(default_factory=dict)
    classes_in_train: int | None = None
    unreadable: int = 0
    too_large: int = 0  # over the pixel limit: skipped undecoded, and counted like the unreadable ones
    duplicates: dict[str, int] = field(default_factory=dict)  # "train&test" -> images in both
    bit_depths: dict[int, int] = field(default_factory=dict)  # bits per sample as stored -> images (16: scaled to 8 when read)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in (READY, WARNING)


class _PixelHashes(Dataset):
    """The hash of each image's decoded pixels, or ``UNREADABLE``, or ``TOO_LARGE``; and its bit depth as stored (0: unread)."""

    def __init__(self, images: LabelledImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, position: int) -> tuple[bytes, int]:
        try:
            image = self.images.image(position)
            pixels = np.asarray(image)
        except ImageTooLarge:
            return TOO_LARGE, 0
        except Exception:  # noqa: BLE001 - any decoder failure means "unreadable", which is what we count
            return UNREADABLE, 0
        header = f"{image.mode}:{pixels.shape}".encode()
        return hashlib.blake2b(header + pixels.tobytes(), digest_size=16).digest(), bit_depth(image)


def pixel_hashes(images: LabelledImages, workers: int, advance: Callable[[int], None]) -> tuple[list[bytes], list[int]]:
    """Each image's pixel hash and its bit depth as stored."""
    loader = DataLoader(_PixelHashes(images), batch_size=64, num_workers=workers, collate_fn=list)
    hashes: list[bytes] = []
    depths: list[int] = []
    for batch in loader:
        hashes += [h for h, _ in batch]
        depths += [d for _, d in batch]
        advance(len(batch))
    return hashes, depths


def check_task(
    task: TaskSpec, data_root: Path, decode: bool = True, workers: int = 0,
    stage: Callable[[str, int], Callable[[int], None]] = lambda _, __: lambda _: None, val_fraction: float | None = None,
) -> CheckReport:  # fmt: skip
    """Check ``task``'s local copy (val carved with ``val_fraction`` when the card leaves it to the
    protocol); never raises for a missing or damaged copy, it reports it."""
    limit = max_image_pixels()  # a malformed limit is one error now, not every image "unreadable"
    try:
        where = locate_source(task, data_root).where
    except TaskNotReady as exc:
        return CheckReport(task.name, MISSING, notes=[str(exc)])
    report = CheckReport(task.name, READY, source=where)
    try:
        splits = carve_splits(task, load_source(task, data_root), val_fraction=val_fraction)
    except UserError as exc:
        report.status, report.notes = BROKEN, [str(exc)]
        return report
    report.sizes = splits.sizes()
    report.classes_in_train = int(len(np.unique(splits.train.labels)))
    if report.classes_in_train != task.num_classes:
        report.status = WARNING
        report.notes.append(f"train has {report.classes_in_train} of the card's {task.num_classes} classes")
    if not decode:
        return report
    hashes = {}
    for name, images in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        hashes[name], depths = pixel_hashes(images, workers, stage(f"{task.name}: decoding {name}", len(images)))
        for depth in filter(None, depths):
            report.bit_depths[depth] = report.bit_depths.get(depth, 0) + 1
        bad = [i for i, h in enumerate(hashes[name]) if h == UNREADABLE]
        large = [i for i, h in enumerate(hashes[name]) if h == TOO_LARGE]
        report.unreadable += len(bad)
        report.too_large += len(large)
        if bad:
            report.notes.append(f"{len(bad)} unreadable {name} image(s), e.g. position {bad[0]}")
        if large:
            report.notes.append(f"{len(large)} {name} image(s) over the pixel limit of {limit:,} skipped undecoded, e.g. position "
                                f"{large[0]} (AIMBENCH_MAX_IMAGE_PIXELS)")  # fmt: skip
    report.duplicates = shared(hashes, ignore=(UNREADABLE, TOO_LARGE))
    for pair, count in report.duplicates.items():
        if count:
            report.notes.append(f"{count} identical image(s) in both {pair.replace('&', ' and ')}")
            report.status = WARNING if report.status == READY else report.status
    deep = {depth: count for depth, count in sorted(report.bit_depths.items()) if depth > 8}
    if deep:
        report.notes.append(", ".join(f"{count} {depth}-bit" for depth, count in deep.items()) + " image(s), scaled to 8 bits when read")
    if report.unreadable or report.too_large:  # an evaluation would stop at the first of them
        report.status = BROKEN
    return report
