"""Images shared between splits, found by key: one rule for ``tasks check`` and for evaluation.

A test score measured on images the heads were trained or selected on measures nothing, and a
card with ``val = test = "train"`` or a test folder symlinked to train produces exactly that
without any error. So carving the splits refuses a test split that shares images with train or
val by identity (:attr:`LabelledImages.identity`: a file's device and inode, which resolves
symlinks and hard links, or an array's row), which costs one ``stat`` per file and no decoding.
``tasks check`` reuses :func:`shared` over decoded pixel hashes to count identical images held
under different files too.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from itertools import combinations

from aimbench.data.images import LabelledImages
from aimbench.errors import UserError


def shared(keys: Mapping[str, Sequence[Hashable]], ignore: Iterable[Hashable] = ()) -> dict[str, int]:
    """For each pair of splits (``"train&test"``), how many keys they both hold (``ignore``d keys aside)."""
    left_out = set(ignore)
    return {f"{a}&{b}": len((set(keys[a]) & set(keys[b])) - left_out) for a, b in combinations(keys, 2)}


def identities(images: LabelledImages) -> list[Hashable] | None:
    """Each image's identity, or None when its source cannot tell cheaply (Hugging Face rows)."""
    identity = images.identity
    return None if identity is None else [identity(int(i)) for i in images.indices]


def require_disjoint_test(task: str, splits: Mapping[str, LabelledImages]) -> None:
    """Refuse a test split sharing images with train or val (``splits``: name -> images, test included)."""
    keys = {name: identities(images) for name, images in splits.items()}
    known = {name: k for name, k in keys.items() if k is not None}
    if "test" not in known:
        return
    for pair, count in shared(known).items():
        if count and "test" in pair.split("&"):
            other = pair.replace("&", "").replace("test", "", 1)
            raise UserError(
                f"task '{task}': test shares {count} image(s) with {other} (the same files, through a path, a symlink or a hard "
                f"link): a test score would be measured on images the heads were trained or selected on; give test its own images"
            )
