"""Images shared between splits: counted by key for ``tasks check``, refused for test when a task loads.

A test score measured on images the heads were trained or selected on measures nothing, and a
card with ``val = test = "train"``, a test folder symlinked to train or a copied one (``cp -r
train test``) produces exactly that without any error. So carving the splits refuses a test split
that shares images with train or val, in two steps that decode nothing:

- by identity (:attr:`Stored.identity`: a file's device and inode, which resolves symlinks and
  hard links, or an array's row), one ``stat`` per file, always;
- by content: an array source's rows compared whole (Fashion-MNIST's 70,000 in a fifth of a
  second); a file's bytes as stored hashed, but only for test images whose size some train or
  val image has (different sizes cannot hold the same bytes), and only while that is cheap:
  :data:`CONTENT_BUDGET` bytes, a file's open counted as ``source_base.OPEN_COST`` more (about
  half a second from the page cache). Past it, a fixed-seed sample of each side is hashed, the
  budget split evenly between test and train plus val, and a ``note:`` line on stderr says how
  many were compared: a copied folder still shows among the pairs sampled, a few copies among
  millions of images may not (``tasks check`` decodes every image and counts them).

Some published benchmarks ship a few byte-identical images in train and test, and how many depends
on the copy (an official folder, a re-encoded Hugging Face export); a card's source states how many
it accepts as ``shared_test_images`` (part of the cell's identity, and written in the record's
``split_policy``), and only more than that is refused. The same file in both splits is refused
whatever the card says. Hugging Face rows have no cheap identity and are not compared; ``tasks check`` reuses
:func:`shared` over decoded pixel hashes to count identical pixels in any source.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import combinations

import numpy as np

from aimbench.data.images import LabelledImages, Stored
from aimbench.errors import UserError

CONTENT_BUDGET = 256 * 2**20  # bytes hashed (plus OPEN_COST per file) by the content check of one task
SAMPLE_SEED = 0


def shared(keys: Mapping[str, Sequence[Hashable]], ignore: Iterable[Hashable] = ()) -> dict[str, int]:
    """For each pair of splits (``"train&test"``), how many keys they both hold (``ignore``d keys aside)."""
    left_out = set(ignore)
    return {f"{a}&{b}": len((set(keys[a]) & set(keys[b])) - left_out) for a, b in combinations(keys, 2)}


def stored(images: LabelledImages) -> list[Stored] | None:
    """Where each image is kept, or None when its source cannot tell cheaply (Hugging Face rows)."""
    where = images.stored
    return None if where is None else [where(int(i)) for i in images.indices]


@dataclass(frozen=True)
class Copies:
    """Test images holding the same bytes as a train or val image: how many, one example pair
    (test's, the other's, the other split); of the test images that could be copies (a train or
    val image has their size) and of the train or val images of those sizes, how many were hashed
    (fewer than all: the budget ran out, and ``count`` is a lower bound)."""

    count: int
    example: tuple[str, str, str] | None
    compared: tuple[int, int]  # test, train or val
    candidates: tuple[int, int]


def _digest(image: Stored) -> bytes | None:
    try:
        return hashlib.blake2b(image.read(), digest_size=16).digest()
    except OSError:  # unreadable: decoding it stops the evaluation with one line naming it
        return None


def _fractions(test_cost: int, other_cost: int, budget: int) -> tuple[float, float]:
    """The fractions of test and of train or val images to hash within ``budget``: all of both when
    they fit, else the budget split evenly (what is left by the cheaper side goes to the other),
    which makes the pairs compared, the product of the two, the largest."""
    if test_cost + other_cost <= budget:
        return 1.0, 1.0
    test = min(1.0, budget / (2 * test_cost))
    other = min(1.0, (budget - test * test_cost) / other_cost)
    return (min(1.0, (budget - other_cost) / test_cost), 1.0) if other == 1.0 else (test, other)


def content_copies(test: Sequence[Stored], others: Mapping[str, Sequence[Stored]], budget: int = CONTENT_BUDGET) -> Copies:
    """Test images whose bytes a train or val image holds, hashing only images of a size both have."""
    test_sizes = {image.size for image in test if image.size >= 0}
    pool = [(split, image) for split, images in others.items() for image in images if image.size in test_sizes]
    held_sizes = {image.size for _, image in pool}
    candidates = [image for image in test if image.size in held_sizes]
    if not candidates:
        return Copies(0, None, (0, 0), (0, len(pool)))
    rng = np.random.default_rng(SAMPLE_SEED)  # a fixed sample: the same listing gives the same answer
    test_share, other_share = _fractions(sum(i.cost for i in candidates), sum(i.cost for _, i in pool), budget)
    chosen = [image for image, u in zip(candidates, rng.random(len(candidates))) if u < test_share]
    held = [(split, image) for (split, image), u in zip(pool, rng.random(len(pool))) if u < other_share]
    digests = {digest: pair for pair in reversed(held) if (digest := _digest(pair[1])) is not None}  # the first listed wins
    found = [(image, digests[digest]) for image in chosen if (digest := _digest(image)) is not None and digest in digests]
    example = (found[0][0].name, found[0][1][1].name, found[0][1][0]) if found else None
    return Copies(len(found), example, (len(chosen), len(held)), (len(candidates), len(pool)))


@cache
def _note(message: str) -> None:
    """A line on stderr, once per process (a task loads once per cell)."""
    print(f"note: {message}", file=sys.stderr)


def _refuse_shared_files(task: str, identities: Mapping[str, list[Hashable]]) -> None:
    for pair, count in shared(identities).items():
        if count and "test" in pair.split("&"):
            other = pair.replace("&", "").replace("test", "", 1)
            raise UserError(
                f"task '{task}': test shares {count} image(s) with {other} (the same files, through a path, a symlink or a hard "
                f"link): a test score would be measured on images the heads were trained or selected on; give test its own images"
            )


def _by_rows(splits: Mapping[str, LabelledImages]) -> tuple[dict[str, list[Hashable]], Copies]:
    """Identities and byte copies of array sources' images, each row's bytes a dictionary key (all
    of Fashion-MNIST's 70,000 rows in a fifth of a second)."""
    identities: dict[str, list[Hashable]] = {name: [(id(images.rows), int(i)) for i in images.indices] for name, images in splits.items()}
    held: dict[bytes, tuple[str, int]] = {}
    for name, images in splits.items():
        if name != "test" and images.rows is not None:
            for i in images.indices[::-1]:  # the first listed wins
                held[images.rows[i].tobytes()] = (name, int(i))
    test = splits["test"]
    assert test.rows is not None
    found = [(int(i), held[row]) for i in test.indices if (row := test.rows[i].tobytes()) in held]
    example = (f"row {found[0][0]}", f"row {found[0][1][1]}", found[0][1][0]) if found else None
    everything = (len(test), len(held))
    return identities, Copies(len(found), example, everything, everything)


def _by_files(splits: Mapping[str, LabelledImages]) -> tuple[dict[str, list[Hashable]], Copies] | None:
    where = {name: found for name, images in splits.items() if (found := stored(images)) is not None}
    if "test" not in where:
        return None
    identities = {name: [image.identity for image in images] for name, images in where.items()}
    return identities, content_copies(where["test"], {name: found for name, found in where.items() if name != "test"})


def require_disjoint_test(task: str, splits: Mapping[str, LabelledImages], allowed: int = 0) -> None:
    """Refuse a test split sharing images with train or val (``splits``: name -> images, test included):
    the same files always, more than ``allowed`` byte-identical copies (the ``shared_test_images`` of the card's source)."""
    rows = all(images.rows is not None for images in splits.values())
    compared = _by_rows(splits) if rows else _by_files(splits)
    if compared is None:
        return
    identities, copies = compared
    _refuse_shared_files(task, identities)
    sampled = copies.compared != copies.candidates
    if sampled:
        (test_hashed, other_hashed), (test_sized, other_sized) = copies.compared, copies.candidates
        _note(f"task '{task}': compared the bytes of {test_hashed:,} of the {test_sized:,} test images that have the size of a train or "
              f"val image with {other_hashed:,} of the {other_sized:,} train or val images of those sizes, a fixed sample within the "
              f"check's budget of {CONTENT_BUDGET // 2**20} MB; 'aimbench tasks check' compares the pixels of every image")  # fmt: skip
    if copies.count > allowed and copies.example is not None:
        test_image, other_image, other = copies.example
        found = f"at least {copies.count}" if sampled else str(copies.count)
        allowance = (f"the card's source accepts {allowed} (shared_test_images): give test its own images or correct that number"
                     if allowed else "give test its own images, or, for a benchmark published with these copies, state their number "
                     "as shared_test_images in the card's [[sources]] entry")  # fmt: skip
        raise UserError(
            f"task '{task}': {found} test image(s) hold the same bytes as {' or '.join(n for n in splits if n != 'test')} images, "
            f"e.g. {test_image} and {other} {other_image}: a test score would be measured on images the heads were trained or "
            f"selected on; {allowance}"
        )
