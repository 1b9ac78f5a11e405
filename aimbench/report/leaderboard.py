"""The leaderboard: backbones x tasks, best and last layer, beside the papers' numbers.

Measured rows read ``latest`` (newest record per cell) and average seeds (mean ± sample std).
Each backbone's rows are followed by the published rows matched to it (``published.backbone``)
and a Δ row (measured − paper, in points) where the two are comparable: an attentive probe, or
the official heads, against the paper's attentive probe at the same layer choice. The mean over
the shown tasks is given only for complete rows, so a partial row is never ranked against
complete ones; rank is by that mean among rows of the same layer choice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from aimbench.report.filters import Filters
from aimbench.report.tables import Table, percent, set_label

SUMMARY_SQL = """
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
WHERE {where}
GROUP BY backbone, task, probe
ORDER BY backbone, probe, task
"""

PUBLISHED_SQL = """
SELECT model, backbone, layer, task, any_value(score) AS score, min(position) AS position
FROM published
WHERE list_contains($shown, task) AND {where}
GROUP BY model, backbone, layer, task
ORDER BY min(min(position)) OVER (PARTITION BY model), layer <> 'last', min(position)
"""

# which paper row a measured row is compared with: (probe, layer choice) -> published layer
_COMPARABLE = {("attentive", "best"): "best", ("attentive", "last"): "last", ("official:last", "last"): "last",
               ("official:best", "best"): "best"}  # fmt: skip
MEASURED, PAPER, DELTA = "measured", "paper", "delta"


@dataclass
class Row:
    """One leaderboard line before formatting."""

    kind: str  # measured | paper | delta
    backbone: str
    probe: str
    layer: str  # "best layer", "last layer", "layer 20"
    cells: dict[str, dict[str, Any]]  # task -> {score, std, seeds, sets, limited} (delta rows: {score})


def cell_summaries(con: duckdb.DuckDBPyConnection, filters: Filters = Filters()) -> list[dict[str, Any]]:
    """One row per (backbone, task, probe), seeds averaged: the long form of the leaderboard."""
    where, params = filters.where()
    cursor = con.execute(SUMMARY_SQL.format(where=where), params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def published_rows(con: duckdb.DuckDBPyConnection, tasks: list[str], filters: Filters = Filters()) -> list[Row]:
    """Paper rows for the shown tasks; with a backbone filter only those matched to a shown backbone."""
    where, params = Filters(backbones=filters.backbones).where()
    cursor = con.execute(PUBLISHED_SQL.format(where=where), {"shown": tasks, **params})
    grouped: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for model, backbone, layer, task, score, _position in cursor.fetchall():
        grouped[(model, backbone, layer)][task] = {"score": score}
    return [
        Row(PAPER, backbone, f"{model} [paper]", f"layer {layer}" if layer.isdigit() else f"{layer} layer", cells)
        for (model, backbone, layer), cells in grouped.items()
    ]


def _measured_rows(summaries: list[dict[str, Any]]) -> list[Row]:
    by_row: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for s in summaries:
        by_row[(s["backbone"], s["probe"])][s["task"]] = s
    rows = []
    for (backbone, probe), cells in by_row.items():
        for which in ("best", "last"):
            rows.append(Row(MEASURED, backbone, probe, f"{which} layer", {
                task: {"score": c[f"{which}_test_score"], "std": c[f"{which}_test_std"], "seeds": c["seeds"],
                       "sets": c[f"{which}_layer_set"], "limited": c["image_limit"] is not None}
                for task, c in cells.items()
            }))  # fmt: skip
    return rows


def _delta(measured: Row, papers: list[Row]) -> Row | None:
    which = measured.layer.split()[0]
    wanted = _COMPARABLE.get((measured.probe, which))
    paper = next((p for p in papers if p.backbone == measured.backbone and p.layer == f"{wanted} layer"), None)
    if paper is None:
        return None
    cells = {t: {"score": c["score"] - paper.cells[t]["score"]} for t, c in measured.cells.items() if t in paper.cells}
    return Row(DELTA, measured.backbone, f"Δ vs {paper.probe.removesuffix(' [paper]')}", measured.layer, cells) if cells else None


def arrange(measured: list[Row], papers: list[Row]) -> list[Row]:
    """Each backbone's measured rows, then its paper rows and Δ rows; unmatched paper rows last."""
    out: list[Row] = []
    shown_papers: set[int] = set()
    for backbone in dict.fromkeys(r.backbone for r in measured):
        own = [r for r in measured if r.backbone == backbone]
        out += own
        matched = [p for p in papers if p.backbone == backbone]
        for paper in matched:
            out.append(paper)
            shown_papers.add(id(paper))
        out += [d for d in (_delta(r, matched) for r in own) if d is not None]
    return out + [p for p in papers if id(p) not in shown_papers]


def _format_cell(row: Row, cell: dict[str, Any] | None) -> str:
    if cell is None or cell["score"] is None:
        return "–"
    if row.kind == DELTA:
        return f"{100 * cell['score']:+.1f}"
    if row.kind == PAPER:
        return percent(cell["score"])
    spread = f"±{percent(cell['std'])}" if cell["seeds"] > 1 else ""
    mark = "*" if cell["limited"] else ""
    labels = "/".join(set_label(name) for name in cell["sets"].split("/"))
    return f"{percent(cell['score'])}{spread}{mark} ({labels})"


def _choice(layer: str) -> str:
    return "last" if layer == "last layer" else "best"


def leaderboard(summaries: list[dict[str, Any]], papers: Sequence[Row] = (), tasks: Sequence[str] | None = None) -> Table:
    """The pivoted table over ``tasks`` (default: the measured ones, by name).

    ``Table.scores`` keeps the raw fractions for LaTeX bolding and HTML sorting.
    """
    tasks = list(tasks) if tasks is not None else sorted({s["task"] for s in summaries})
    metrics = {s["task"]: s["metric"] for s in summaries}
    rows = arrange(_measured_rows(summaries), list(papers))
    means: list[float | None] = []
    for row in rows:
        values = [row.cells[t]["score"] for t in tasks if t in row.cells and row.cells[t]["score"] is not None]
        means.append(sum(values) / len(values) if len(values) == len(tasks) and tasks else None)
    ranks: dict[int, int] = {}
    for choice in ("best", "last"):  # a fixed block (the paper's "layer 20") is a choice of best layer
        ranked = sorted((i for i, r in enumerate(rows) if _choice(r.layer) == choice and r.kind != DELTA and means[i] is not None),
                        key=lambda i: -means[i])  # type: ignore[operator]  # fmt: skip
        ranks.update({i: position + 1 for position, i in enumerate(ranked)})
    table_rows, scores = [], []
    for i, row in enumerate(rows):
        mean = f"{100 * means[i]:+.1f}" if row.kind == DELTA and means[i] is not None else percent(means[i])
        table_rows.append([row.backbone, row.probe, row.layer, *(_format_cell(row, row.cells.get(t)) for t in tasks),
                           mean, str(ranks[i]) if i in ranks else ""])  # fmt: skip
        scores.append([None, None, None, *((row.cells.get(t) or {}).get("score") for t in tasks), means[i], ranks.get(i)])
    notes = ["test score % (top-1 unless the column names another metric); (Ln) = block n, avg:A-B = mean of blocks A..B;",
             "best layer set chosen on val; over several seeds: mean ± sample std"]  # fmt: skip
    if papers:
        notes.append("paper rows: published numbers (results/published); Δ = measured − paper, in points")
    if any(c.get("limited") for r in rows for c in r.cells.values()):
        notes.append("* measured on a --limit subset: a smoke number, not comparable to full runs")
    headers = [task if metrics.get(task, "top1") == "top1" else f"{task} ({metrics[task]})" for task in tasks]
    return Table("aimbench leaderboard", ["backbone", "probe", "layer", *headers, "mean", "rank"], table_rows, notes,
                 scores=scores, kinds=[r.kind for r in rows])  # fmt: skip
