"""The leaderboard: one row pair (best and last layer) per setup, beside the papers' numbers.

Measured rows read ``latest`` (the newest record per identity) and average seeds (mean ± sample
std) within one setup (``aimbench.report.setups``): runs with other weights, limits, dtypes,
protocols or layer specs are rows of their own, labelled with what sets them apart. Best and last
are the layer sets each record stored when its cell finished (chosen on val), never re-chosen
here. Each backbone's rows are followed by the published rows matched to it
(``published.backbone``), the measured score on each paper window, and a Δ row (measured − paper,
in points) only where the two are like with like (``aimbench.report.comparison``). The mean over
the shown tasks is given only for complete rows; ranks are by that mean within one probe kind,
layer choice and image limit, so a linear probe never outranks an attentive one and a smoke run
never outranks a full one.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import duckdb

from aimbench.report.comparison import CardWindows, Comparison, LayerScore, Paper, compare
from aimbench.report.filters import Filters
from aimbench.report.setups import Setup, setup_sql, varying_columns
from aimbench.report.tables import Table, percent, set_label

SUMMARY_SQL = """
SELECT {setup}, task, any_value(weights_name) AS weights_name,
       any_value(metric) AS metric,
       count(*) AS seeds,
       avg(best_test_score) AS best_test_score,
       stddev_samp(best_test_score) AS best_test_std,
       string_agg(DISTINCT best_layer_set, '/' ORDER BY best_layer_set) AS best_layer_set,
       avg(last_test_score) AS last_test_score,
       stddev_samp(last_test_score) AS last_test_std,
       string_agg(DISTINCT last_layer_set, '/' ORDER BY last_layer_set) AS last_layer_set,
       max(CAST(json_extract(backbone_info, '$.depth') AS INTEGER)) AS depth,
       any_value(json_extract(backbone_info, '$.windows')::VARCHAR) AS windows
FROM latest
WHERE {where}
GROUP BY {setup}, task
ORDER BY backbone, weights_name, probe, protocol, layers_spec, image_limit NULLS FIRST, dtype, task
"""

LAYERS_SQL = """
SELECT {setup}, task, layer_set, blocks, avg(test_score) AS test_score
FROM layer_metrics
WHERE {where}
GROUP BY {setup}, task, layer_set, blocks
"""

PUBLISHED_SQL = """
SELECT model, backbone, probe, layer, coalesce(blocks, '') AS blocks, task, any_value(score) AS score
FROM published
WHERE list_contains($shown, task) AND {where}
GROUP BY model, backbone, probe, layer, coalesce(blocks, ''), task
ORDER BY min(min(position)) OVER (PARTITION BY model), layer <> 'last', min(position)
"""

MEASURED, PAPER, DELTA = "measured", "paper", "delta"


class SetupLabel(Protocol):
    """How rows name a setup: its probe and what sets it apart (``name_protocol``: always its protocol)."""

    def __call__(self, setup: Setup, name_protocol: bool = False) -> str: ...


@dataclass
class Row:
    """One leaderboard line before formatting."""

    kind: str  # measured | paper | delta
    backbone: str
    weights: str  # the weights override's name; "" for the card's weights
    probe: str  # the probe kind and what sets the setup apart ("linear · limit 500"), or "<model> [paper]"
    layer: str  # "best layer", "last layer", "avg:18-23 (paper: last layer)"
    cells: dict[str, dict[str, Any]]  # task -> {score, std, seeds, sets, limited} (paper, delta and window rows: {score})
    rank_group: tuple[Any, ...] | None = None  # rows are ranked against rows of the same group only


def cell_summaries(con: duckdb.DuckDBPyConnection, filters: Filters = Filters()) -> list[dict[str, Any]]:
    """One row per (setup, task), seeds averaged: the long form of the leaderboard."""
    where, params = filters.where()
    cursor = con.execute(SUMMARY_SQL.format(setup=setup_sql(), where=where), params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def layer_scores(con: duckdb.DuckDBPyConnection, filters: Filters = Filters()) -> dict[tuple[Setup, str], list[LayerScore]]:
    """Every layer set's test score per (setup, task), seeds averaged: what paper windows are looked up in."""
    where, params = filters.where()
    cursor = con.execute(LAYERS_SQL.format(setup=setup_sql(), where=where), params)
    names = [d[0] for d in cursor.description]
    scores: dict[tuple[Setup, str], list[LayerScore]] = defaultdict(list)
    for values in cursor.fetchall():
        row = dict(zip(names, values))
        scores[(Setup.of(row), row["task"])].append(LayerScore(row["layer_set"], tuple(row["blocks"]), row["test_score"]))
    return dict(scores)


def published_rows(con: duckdb.DuckDBPyConnection, tasks: list[str], filters: Filters = Filters()) -> list[Paper]:
    """Paper rows for the shown tasks; with a backbone filter only those matched to a shown backbone."""
    where, params = Filters(backbones=filters.backbones).where()
    cursor = con.execute(PUBLISHED_SQL.format(where=where), {"shown": tasks, **params})
    grouped: dict[tuple[str, str, str, str, str], Paper] = {}
    for model, backbone, probe, layer, blocks, task, score in cursor.fetchall():
        paper = grouped.setdefault((model, backbone, probe, layer, blocks), Paper(model, backbone, probe, layer, blocks))
        paper.cells[task] = score
    return list(grouped.values())


def _card_windows(cells: dict[str, dict[str, Any]]) -> CardWindows:
    depth = max((c["depth"] for c in cells.values() if c.get("depth")), default=None)
    windows = next((json.loads(c["windows"]) for c in cells.values() if c.get("windows")), None)
    return CardWindows(depth, windows)


def _measured_rows(
    summaries: list[dict[str, Any]],
) -> tuple[dict[Setup, dict[str, dict[str, Any]]], list[Row], SetupLabel]:
    """The rows of each setup, and how rows name a setup (its probe and what sets it apart)."""
    by_setup: dict[Setup, dict[str, dict[str, Any]]] = defaultdict(dict)
    for s in summaries:
        by_setup[Setup.of(s)][s["task"]] = s
    varying = varying_columns(list(by_setup))

    def label(setup: Setup, name_protocol: bool = False) -> str:
        return setup.probe_label(varying[(setup.backbone, setup.weights_key)], name_protocol)

    rows = []
    for setup, cells in by_setup.items():
        for which in ("best", "last"):
            rows.append(Row(MEASURED, setup.backbone, setup.weights_name, label(setup), f"{which} layer", {
                task: {"score": c[f"{which}_test_score"], "std": c[f"{which}_test_std"], "seeds": c["seeds"],
                       "sets": c[f"{which}_layer_set"], "limited": setup.limited}
                for task, c in cells.items()
            }, rank_group=(setup.probe, which, setup.image_limit)))  # fmt: skip
    return by_setup, rows, label


def _comparison_rows(comparisons: list[Comparison], label: SetupLabel) -> dict[str, list[Row]]:
    """Per backbone: the measured score on each paper window (once per setup and window), then the Δ
    rows, which always name the protocol the measured side was trained under."""
    windows, deltas, seen = defaultdict(list), defaultdict(list), set()
    for c in comparisons:
        setup, paper = c.setup, c.paper
        layer = f"{c.window_label} (paper: {paper.layer_label})"
        if (setup, c.window) not in seen:
            seen.add((setup, c.window))
            windows[setup.backbone].append(Row(MEASURED, setup.backbone, setup.weights_name, label(setup), layer,
                                               {t: {"score": v} for t, v in c.measured.items()}))  # fmt: skip
        deltas[setup.backbone].append(Row(DELTA, setup.backbone, setup.weights_name, f"Δ {label(setup, True)} vs {paper.model}", layer,
                                          {t: {"score": v} for t, v in c.deltas().items()}))  # fmt: skip
    return {b: windows[b] + deltas[b] for b in windows}


def _paper_row(paper: Paper) -> Row:
    choice = "last" if paper.layer == "last" else "best"  # a fixed layer (the paper's "layer 20") is a choice of best layer
    return Row(PAPER, paper.backbone, "", f"{paper.model} [paper]", paper.layer_label,
               {t: {"score": v} for t, v in paper.cells.items()}, rank_group=(paper.probe, choice, None))  # fmt: skip


def arrange(measured: list[Row], papers: list[Paper], compared: dict[str, list[Row]]) -> list[Row]:
    """Each backbone's measured rows, then its paper rows, window and Δ rows; unmatched paper rows last."""
    out: list[Row] = []
    shown: set[int] = set()
    for backbone in dict.fromkeys(r.backbone for r in measured):
        out += [r for r in measured if r.backbone == backbone]
        for paper in papers:
            if paper.backbone == backbone:
                out.append(_paper_row(paper))
                shown.add(id(paper))
        out += compared.get(backbone, [])
    return out + [_paper_row(p) for p in papers if id(p) not in shown]


def _format_cell(row: Row, cell: dict[str, Any] | None) -> str:
    if cell is None or cell["score"] is None:
        return "–"
    if row.kind == DELTA:
        return f"{100 * cell['score']:+.1f}"
    if "sets" not in cell:  # a paper number, or a measured score on a paper's window
        return percent(cell["score"])
    spread = f"±{percent(cell['std'])}" if cell["seeds"] > 1 else ""
    mark = "*" if cell["limited"] else ""
    labels = "/".join(set_label(name) for name in cell["sets"].split("/"))
    return f"{percent(cell['score'])}{spread}{mark} ({labels})"


def _ranks(rows: list[Row], means: list[float | None]) -> dict[int, int]:
    """Rank by mean, highest first, within each rank group; rows without a group or a mean are not ranked."""
    groups: dict[tuple[Any, ...], list[tuple[int, float]]] = defaultdict(list)  # (row index, mean)
    for i, (row, mean) in enumerate(zip(rows, means)):
        if row.rank_group is not None and mean is not None:
            groups[row.rank_group].append((i, mean))
    ranks = {}
    for members in groups.values():
        ranked = sorted(members, key=lambda member: -member[1])
        ranks.update({i: position + 1 for position, (i, _) in enumerate(ranked)})
    return ranks


def leaderboard(
    summaries: list[dict[str, Any]],
    papers: Sequence[Paper] = (),
    tasks: Sequence[str] | None = None,
    layers: dict[tuple[Setup, str], list[LayerScore]] | None = None,
) -> Table:
    """The pivoted table over ``tasks`` (default: the measured ones, by name); ``layers``
    (``layer_scores``) holds what paper windows are looked up in: without it no Δ is computed.

    ``Table.scores`` keeps the raw fractions for LaTeX bolding and HTML sorting.
    """
    tasks = list(tasks) if tasks is not None else sorted({s["task"] for s in summaries})
    metrics = {s["task"]: s["metric"] for s in summaries}
    by_setup, measured, label = _measured_rows(summaries)
    cards = {setup: _card_windows(cells) for setup, cells in by_setup.items()}
    comparisons, why_not = compare(list(by_setup), papers, layers or {}, cards, label)
    rows = arrange(measured, list(papers), _comparison_rows(comparisons, label))
    means: list[float | None] = []
    for row in rows:
        values = [row.cells[t]["score"] for t in tasks if t in row.cells and row.cells[t]["score"] is not None]
        means.append(sum(values) / len(values) if len(values) == len(tasks) and tasks else None)
    ranks = _ranks(rows, means)
    with_weights = any(r.weights for r in rows)
    table_rows, scores = [], []
    for i, (row, row_mean) in enumerate(zip(rows, means)):
        mean = f"{100 * row_mean:+.1f}" if row.kind == DELTA and row_mean is not None else percent(row_mean)
        names = [row.backbone, *([row.weights] if with_weights else []), row.probe, row.layer]
        table_rows.append([*names, *(_format_cell(row, row.cells.get(t)) for t in tasks), mean, str(ranks[i]) if i in ranks else ""])
        scores.append([*(None for _ in names), *((row.cells.get(t) or {}).get("score") for t in tasks), row_mean, ranks.get(i)])
    notes = ["test score % (top-1 unless the column names another metric); (Ln) = block n, avg:A-B = mean of blocks A..B;",
             "best and last layer sets as stored by each cell (best chosen on val); over several seeds: mean ± sample std;",
             "rank: by mean over complete rows, within one probe kind, layer choice and image limit"]  # fmt: skip
    if with_weights:
        notes.append("weights: the name of a --weights override (--name, or the file's or run folder's); empty = the card's weights")
    if papers:
        notes.append("paper rows: published numbers (results/published, and published/ in --cards folders); Δ = measured − "
                     "paper, in points, on the paper's own probe kind and layer window over the full test split")  # fmt: skip
        notes += why_not
    if any(c.get("limited") for r in rows for c in r.cells.values()):
        notes.append("* measured on a --limit subset: a smoke number, ranked only against runs with the same limit")
    headers = [task if metrics.get(task, "top1") == "top1" else f"{task} ({metrics[task]})" for task in tasks]
    columns = ["backbone", *(["weights"] if with_weights else []), "probe", "layer", *headers, "mean", "rank"]
    return Table("aimbench leaderboard", columns, table_rows, notes, scores=scores, kinds=[r.kind for r in rows])
