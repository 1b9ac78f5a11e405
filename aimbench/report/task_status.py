"""Tables for ``aimbench tasks check`` and ``aimbench tasks prepare``."""

from __future__ import annotations

from aimbench.cards.task_card import SPLITS
from aimbench.data.check import CheckReport
from aimbench.data.prepare import PrepareOutcome
from aimbench.report.listing import sizes_label
from aimbench.report.tables import Table


def check_table(reports: list[CheckReport], expected: dict[str, dict[str, int]]) -> Table:
    rows = []
    for report in reports:
        sizes = "/".join(str(report.sizes[k]) for k in SPLITS) if report.sizes else "–"
        want = expected[report.task]
        duplicates = sum(report.duplicates.values())
        rows.append([
            report.task, report.status, report.source or "–", sizes, sizes_label(want),
            "–" if report.classes_in_train is None else str(report.classes_in_train),
            str(report.unreadable) if report.sizes else "–", str(report.too_large) if report.sizes else "–",
            str(duplicates) if report.duplicates else "–",
            ",".join(map(str, sorted(report.bit_depths))) or "–",
        ])  # fmt: skip
    ready = sum(r.ok for r in reports)
    notes = [f"{r.task}: {note}" for r in reports for note in r.notes]
    columns = [
        "task",
        "status",
        "source",
        "train/val/test",
        "expected",
        "classes",
        "unreadable",
        "too large",
        "cross-split dups",
        "bit depth",
    ]
    return Table(f"{ready} of {len(reports)} tasks ready", columns, rows, notes)


def prepare_table(outcomes: list[PrepareOutcome]) -> Table:
    rows = [[o.task, o.status, o.detail] for o in outcomes]
    ready = sum(o.status in ("ready", "prepared") for o in outcomes)
    return Table(f"{ready} of {len(outcomes)} tasks ready", ["task", "status", "where / what to do"], rows)
