"""Names as users write them: comma-separated on the command line, or a sequence from Python."""

from __future__ import annotations

from collections.abc import Sequence


def split_names(values: str | Sequence[str]) -> tuple[str, ...]:
    """``"a, b"`` or ``["a", "b"]`` as a tuple of non-empty, stripped names, order and repeats kept.

    Every comma-separated option (backbones, tasks, probes, seeds) is read by this one function,
    so ``"a,,b "`` means the same wherever a user writes it, on the command line or in Python.
    """
    items = values.split(",") if isinstance(values, str) else values
    return tuple(item.strip() for item in items if item.strip())
