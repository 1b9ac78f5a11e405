"""Layer sets: which blocks feed one probe head, named as the user wrote them.

A layer set is a single block or a window whose features are the mean of its raw block outputs
(AIM's probes average 6 blocks). ``--layers`` takes a comma-separated mix of:

- ``all``: every block, each its own set;
- ``last``: the card's ``last`` window where it has one (AIM: blocks depth-6..depth-1), else the
  final block;
- ``best``: the card's ``best`` window (AIM's released best layers); an error for cards without;
- ``avg:A-B``: the mean of blocks A..B inclusive (negative indices count from the end);
- ``i``: block i (negative counts from the end).

Kept free of torch so planning validates ``--layers`` before anything heavy is imported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aimbench.errors import UserError

SYNTAX = "use all, last, best, avg:A-B or block indices like 0,5,-1"
_WINDOW = re.compile(r"avg:\s*(-?\d+)\s*-\s*(-?\d+)")


@dataclass(frozen=True)
class LayerSet:
    """The blocks one head reads; ``name`` is how records and reports refer to it."""

    name: str
    blocks: tuple[int, ...]

    @property
    def last_block(self) -> int:
        return self.blocks[-1]


def _block(text: str, spec: str, depth: int) -> int:
    try:
        index = int(text.strip())
    except ValueError:
        raise UserError(f"bad --layers '{spec}': '{text}' is not a block index; {SYNTAX}") from None
    if not -depth <= index < depth:
        raise UserError(f"bad --layers '{spec}': block {index} is outside 0..{depth - 1} (depth {depth})")
    return index % depth


def _window(part: str, spec: str, depth: int) -> LayerSet:
    match = _WINDOW.fullmatch(part)
    if match is None:
        raise UserError(f"bad --layers '{spec}': '{part}' needs a range like avg:18-23 or avg:-6--1")
    first, last = _block(match[1], spec, depth), _block(match[2], spec, depth)
    if first > last:
        raise UserError(f"bad --layers '{spec}': window '{part}' is empty (blocks {first}..{last})")
    return LayerSet(f"avg:{first}-{last}", tuple(range(first, last + 1)))


def _named_window(name: str, blocks: Sequence[int]) -> LayerSet:
    contiguous = list(blocks) == list(range(blocks[0], blocks[-1] + 1))
    label = f"avg:{blocks[0]}-{blocks[-1]}" if contiguous else "avg:" + "+".join(map(str, blocks))
    return LayerSet(f"{name}={label}" if len(blocks) > 1 else f"{name}={blocks[0]}", tuple(blocks))


def parse_layer_sets(spec: str, depth: int, windows: Mapping[str, Sequence[int]] | None = None) -> list[LayerSet]:
    """The layer sets of ``spec`` in the order given, duplicates (same blocks) dropped."""
    windows = windows or {}
    sets: list[LayerSet] = []
    for raw in spec.split(","):
        part = raw.strip()
        if part == "all":
            sets += [LayerSet(str(i), (i,)) for i in range(depth)]
        elif part == "last":
            sets.append(_named_window("last", windows["last"]) if "last" in windows else LayerSet(str(depth - 1), (depth - 1,)))
        elif part == "best":
            if "best" not in windows:
                raise UserError(f"bad --layers '{spec}': this backbone's card defines no 'best' window; use avg:A-B")
            sets.append(_named_window("best", windows["best"]))
        elif part.startswith("avg:"):
            sets.append(_window(part, spec, depth))
        else:
            index = _block(part, spec, depth)
            sets.append(LayerSet(str(index), (index,)))
    unique: dict[tuple[int, ...], LayerSet] = {}
    for layer_set in sets:
        unique.setdefault(layer_set.blocks, layer_set)
    return list(unique.values())


def blocks_needed(sets: Sequence[LayerSet]) -> list[int]:
    """Every block any set reads, sorted: what one backbone pass must return."""
    return sorted({block for layer_set in sets for block in layer_set.blocks})


def parse_blocks(spec: str, depth: int) -> list[int]:
    """Plain block selection (``all``, ``last`` = the final block, indices, windows' blocks)."""
    return blocks_needed(parse_layer_sets(spec, depth))
