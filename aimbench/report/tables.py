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
       any_value(metric) AS metric,
       count(*) AS seeds,
       avg(best_test_score) AS best_test_score,
       stddev_samp(best_test_score) AS best_test_std,
       string_agg(DISTINCT best_layer_set, '/' ORDER BY best_layer_set) AS best_layer_set,
       avg(last_test_score) AS last_test_score,
       stddev_samp(last_test_score) AS last_test_std,
       string_agg(DISTINCT last_layer_set, '/' ORDER BY last_layer_set) AS last_layer_set,
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


def set_label(name: str) -> str:
    """``L5`` for a single block, the set's own name (``avg:18-23``, ``last=avg:18-23``) otherwise."""
    return f"L{name}" if name.isdigit() else name


def hparams_label(hparams: dict[str, float] | None) -> str:
    short = {"learning_rate": "lr", "weight_decay": "wd"}
    return "–" if not hparams else " ".join(f"{short.get(k, k)}={v:g}" for k, v in hparams.items())


def cell_summaries(con: duckdb.DuckDBPyConnection, probe: str | None = None) -> list[dict[str, Any]]:
    """One row per (backbone, task, probe), seeds averaged: the long form of the leaderboard."""
    cursor = con.execute(LEADERBOARD_SQL, {"probe": probe})
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def leaderboard(summaries: list[dict[str, Any]]) -> Table:
    tasks = sorted({s["task"] for s in summaries})
    metrics = {s["task"]: s["metric"] for s in summaries}
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
                value = cell[f"{which}_test_score"]
                values.append(value)
                mark = "*" if cell["image_limit"] is not None else ""
                limited |= bool(mark)
                labels = "/".join(set_label(name) for name in cell[f"{which}_layer_set"].split("/"))
                spread = f"±{percent(cell[f'{which}_test_std'])}" if cell["seeds"] > 1 else ""
                row.append(f"{percent(value)}{spread}{mark} ({labels})")
            row.append(percent(sum(values) / len(values)) if len(values) == len(tasks) else "–")
            rows.append(row)
    notes = ["test score % (top-1 unless the column names another metric); (Ln) = block n, avg:A-B = mean of blocks A..B;",
             "best layer set chosen on val; over several seeds: mean ± sample std"]
    if limited:
        notes.append("* measured on a --limit subset: a smoke number, not comparable to full runs")
    headers = [task if metrics[task] == "top1" else f"{task} ({metrics[task]})" for task in tasks]
    return Table("aimbench leaderboard", ["backbone", "probe", "layer", *headers, "mean"], rows, notes)


def layer_table(record: dict[str, Any]) -> Table:
    """Per-layer-set val/test scores of one record, with the best (by val) and last sets marked."""
    rows = []
    for layer in record["layers"]:
        marks = [m for m in ("best", "last") if record[f"{m}_layer_set"] == layer["layer_set"]]
        rows.append(
            [
                set_label(layer["layer_set"]),
                layer["token"],
                hparams_label(layer["hparams"]),
                percent(layer["val_score"]),
                percent(layer["test_score"]),
                " ".join(marks),
            ]
        )
    title = (
        f"{record['backbone']} on {record['task']} — {record['probe']} probe, seed {record['seed']} "
        f"(train {record['n_train']} / val {record['n_val']} / test {record['n_test']})"
    )
    notes = [f"weights {record['weights_id']} sha256:{record['weights_sha256'][:12]}; {record['wall_time_s']:.1f} s"]
    plan = (record.get("probe_config") or {}).get("memory_plan")
    if plan:
        notes.append(f"attentive heads: {plan}")
    metric = record["metric"]
    return Table(title, ["layer set", "token", "selected", f"val {metric}", f"test {metric}", ""], rows, notes)
