"""Ranks that separate only what the data can separate: ``1``, ``2-3``, ``2-3``.

Rows are ordered by their mean over the shown tasks, highest first, within one rank group (probe
kind, layer choice, image limit). The first row leads a tie group; each following row joins the
current group when it is not apart from the group's *leader* (``aimbench.report.intervals.apart``
on the means, each mean's half-width from its tasks' stored intervals), and otherwise leads a new
group. Comparing with the leader, not with the row above, keeps a chain of small steps from tying
the first row with the last. Every member of a group shows the group's span of positions.

A row without an interval on every task (records older than per-example outputs, or seeds whose
outputs are missing) cannot be tested: it gets its plain position and never ties, and the table
says so.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable
from dataclasses import dataclass

from aimbench.report.intervals import apart

RULE = (
    "rank: by mean over complete rows, within one probe kind, layer choice and image limit; rows share a rank (2-3) "
    "when their mean is not apart from the group leader's: |difference| ≤ sqrt(h_a² + h_b²), h = 95% half-width of "
    "a mean (per-task intervals, tasks independent); unpaired, so conservative: 'aimbench report compare' runs the paired test"
)


@dataclass(frozen=True)
class Ranked:
    """One row to rank: its position in the table, its group, its mean and the mean's half-width (None: unknown)."""

    index: int
    group: Hashable
    mean: float
    half: float | None


def tied_ranks(rows: list[Ranked]) -> dict[int, str]:
    """Row index -> ``"1"`` or ``"2-3"``; rows of different groups are never compared."""
    groups: dict[Hashable, list[Ranked]] = defaultdict(list)
    for row in rows:
        groups[row.group].append(row)
    labels: dict[int, str] = {}
    for members in groups.values():
        ordered = sorted(members, key=lambda r: -r.mean)
        ties: list[list[Ranked]] = []
        for row in ordered:
            leader = ties[-1][0] if ties else None
            if (
                leader is not None
                and leader.half is not None
                and row.half is not None
                and not apart(leader.mean, leader.half, row.mean, row.half)
            ):
                ties[-1].append(row)
            else:
                ties.append([row])
        position = 1
        for tie in ties:
            label = str(position) if len(tie) == 1 else f"{position}-{position + len(tie) - 1}"
            labels.update({row.index: label for row in tie})
            position += len(tie)
    return labels
