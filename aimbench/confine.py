"""Paths that must stay inside a root: the data root for a task card, the card root for weights.

A card is data a user may have downloaded, so the paths it names are checked before anything is
read or written through them. Two checks, because the root is not always known when a card loads:

* :func:`escape_problem` is lexical and runs at card load: a relative path that cannot leave its
  root whatever the root is (no absolute path, no ``..`` climbing out, no backslash or NUL).
* :func:`resolves_inside` runs where the root is known (``tasks prepare`` before it writes, a
  backbone card against its own card directory): the path is resolved, ``..`` and symbolic links
  included, and must still lie inside the resolved root.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath


def escape_problem(text: str) -> str | None:
    """Why ``text`` is not a relative path confined to its root, or None when it is."""
    if "\x00" in text or "\\" in text:
        return f"must be a relative path with '/' separators, got {text!r}"
    path = PurePosixPath(text)
    if path.is_absolute() or text.startswith("~"):
        return f"must be relative to its root, got the absolute path {text!r}"
    normal = os.path.normpath(text)
    if normal == "." or normal == ".." or normal.startswith("../"):
        return f"must name something inside its root, got {text!r} (no '..' leading out)"
    return None


def resolves_inside(path: Path, root: Path) -> bool:
    """Whether ``path``, with ``..`` and symbolic links resolved, lies inside ``root`` (or is it)."""
    return path.resolve().is_relative_to(root.resolve())
