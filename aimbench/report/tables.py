"""Report tables built from the DuckDB views: the leaderboard and a cell's layer curve.

The leaderboard reads ``latest`` (newest record per cell), averages seeds, and pivots to
backbones x tasks with a best-layer row (layer chosen on val) and a last-layer row. The mean
over tasks is shown only for backbones that have every task of the table, so a partial row is
never ranked against complete ones. Cells measured with ``--limit`` are marked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb

LEADERBOARD_SQL = """
SELECT backbone, task, probe,
       count(*) AS seeds,
       avg(best_test_top1) AS best_test_top1,
       string_agg(DISTINCT CAST(best_layer AS VARCHAR), '/' ORDER BY CAST(best_layer AS VARCHAR)) AS best_layer,
       avg(last_test_top1) AS last_test_top1,
       max(last_layer) AS last_layer,
       max(image_limit) AS image_limit
FROM latest
WHERE ($probe IS NULL OR probe = $probe)
GROUP BY backbone, task, probe
ORDER BY backbone, probe, task
"""


@dataclass
class Table:
    """A rendered-agnostic table: display strings, ready for terminal, Markdown or CSV."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def cell_summaries(con: duckdb.DuckDBPyConnection, probe: str | None = None) -> list[dict[str, Any]]:
    """One row per (backbone, task, probe), seeds averaged: the long form of the leaderboard."""
    cursor = con.execute(LEADERBOARD_SQL, {"probe": probe})
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def leaderboard(summaries: list[dict[str, Any]]) -> Table:
    tasks = sorted({s["task"] for s in summaries})
    by_row: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for s in summaries:
        by_row.setdefault((s["backbone"], s["probe"]), {})[s["task"]] = s
    rows, limited = [], False
    for (backbone, probe), cells in by_row.items():
        for which in ("best", "last"):
            values, row = [], [backbone, probe, f"{which} layer"]
            for task in tasks:
                cell = cells.get(task)
                if cell is None:
                    row.append("–")
                    continue
                value = cell[f"{which}_test_top1"]
                values.append(value)
                mark = "*" if cell["image_limit"] is not None else ""
                limited |= bool(mark)
                row.append(f"{percent(value)}{mark} (L{cell[f'{which}_layer']})")
            row.append(percent(sum(values) / len(values)) if len(values) == len(tasks) else "–")
            rows.append(row)
    notes = ["test top-1 %; (Ln) = block index, best layer chosen on val; seeds averaged"]
    if limited:
        notes.append("* measured on a --limit subset: a smoke number, not comparable to full runs")
    return Table("aimbench leaderboard", ["backbone", "probe", "layer", *tasks, "mean"], rows, notes)


def layer_table(record: dict[str, Any]) -> Table:
    """Per-layer val/test top-1 of one record, with the best (by val) and last layers marked."""
    rows = []
    for layer in record["layers"]:
        marks = [m for m, key in (("best", "best_layer"), ("last", "last_layer")) if record[key] == layer["layer"]]
        rows.append(
            [
                str(layer["layer"]),
                layer["token"],
                "–" if layer["lr"] is None else f"{layer['lr']:g}",
                percent(layer["val_top1"]),
                percent(layer["test_top1"]),
                " ".join(marks),
            ]
        )
    title = (
        f"{record['backbone']} on {record['task']} — {record['probe']} probe, seed {record['seed']} "
        f"(train {record['n_train']} / val {record['n_val']} / test {record['n_test']})"
    )
    notes = [f"weights {record['weights_id']} sha256:{record['weights_sha256'][:12]}; {record['wall_time_s']:.1f} s"]
    return Table(title, ["layer", "token", "lr", "val top-1", "test top-1", ""], rows, notes)
