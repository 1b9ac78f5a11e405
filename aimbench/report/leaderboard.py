"""The leaderboard: one row pair (best and last layer) per setup, beside the papers' numbers.

Measured rows read ``latest`` (the newest record per identity) and average seeds within one setup (``aimbench.report.setups``): runs with other weights, limits, dtypes,
protocols or layer specs are rows of their own, labelled with what sets them apart. Best and last
are the layer sets each record stored when its cell finished (chosen on val), never re-chosen
here. Each backbone's rows are followed by the published rows matched to it
(``published.backbone``), the measured score on each paper window, and a Δ row (measured − paper,
in points) only where the two are like with like (``aimbench.report.comparison``). The mean over
the shown tasks is given only for complete rows; ranks are by that mean within one probe kind,
layer choice and image limit, so a linear probe never outranks an attentive one and a smoke run
never outranks a full one; rows whose means the intervals cannot separate share a rank
(``aimbench.report.ranks``). Every measured score shows its 95 % interval
(``aimbench.report.intervals``), and a Δ says whether the paper's number lies inside it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import duckdb

from aimbench.report.cell_bounds import SUMMARY_COLUMNS
from aimbench.report.comparison import CardWindows, Comparison, LayerScore, Paper, compare
from aimbench.report.filters import Filters
from aimbench.report.intervals import Bounds, contains, hover, mean_half, show
from aimbench.report.ranks import RULE, Ranked, tied_ranks
from aimbench.report.setups import Setup, setup_sql, varying_columns
from aimbench.report.tables import Table, percent, set_label

SUMMARY_SQL = """
SELECT {setup}, task, any_value(weights_name) AS weights_name,
       any_value(metric) AS metric,
       count(*) AS seeds, any_value(n_test) AS n_test,
       avg(best_test_score) AS best_test_score,
       stddev_samp(best_test_score) AS best_test_std,
       string_agg(DISTINCT best_layer_set, '/' ORDER BY best_layer_set) AS best_layer_set,
       avg(last_test_score) AS last_test_score,
       stddev_samp(last_test_score) AS last_test_std,
       string_agg(DISTINCT last_layer_set, '/' ORDER BY last_layer_set) AS last_layer_set,
       max(CAST(json_extract(backbone_info, '$.depth') AS INTEGER)) AS depth,
       any_value(json_extract(backbone_info, '$.windows')::VARCHAR) AS windows,{extra}
FROM latest
WHERE {where}
GROUP BY {setup}, task
ORDER BY backbone, weights_name, probe, protocol, layers_spec, image_limit NULLS FIRST, dtype, task
"""

LAYERS_SQL = """
SELECT {setup}, task, layer_set, blocks, avg(test_score) AS test_score,
       CASE WHEN count(*) = 1 THEN any_value(test_low) END AS low, CASE WHEN count(*) = 1 THEN any_value(test_high) END AS high
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
    # task -> {score, std, seeds, sets, limited, bounds, edge}; paper rows: {score}; window rows: {score, bounds}; Δ rows: {score, inside}
    cells: dict[str, dict[str, Any]]
    rank_group: tuple[Any, ...] | None = None  # rows are ranked against rows of the same group only


def cell_summaries(con: duckdb.DuckDBPyConnection, filters: Filters = Filters()) -> list[dict[str, Any]]:
    """One row per (setup, task), seeds averaged: the long form of the leaderboard, with what
    ``aimbench.report.cell_bounds`` reads (stored intervals, grid edges) in the same pass."""
    where, params = filters.where()
    cursor = con.execute(SUMMARY_SQL.format(setup=setup_sql(), where=where, extra=SUMMARY_COLUMNS), params)
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
        scores[(Setup.of(row), row["task"])].append(
            LayerScore(row["layer_set"], tuple(row["blocks"]), row["test_score"], row["low"], row["high"])
        )
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
    summaries: list[dict[str, Any]], bounds: dict[tuple[Setup, str, str], Bounds], edges: dict[tuple[Setup, str], list[str]]
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
                       "sets": c[f"{which}_layer_set"], "limited": setup.limited, "bounds": bounds.get((setup, task, which)),
                       "edge": which == "best" and (setup, task) in edges}
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
                                               {t: {"score": v, "bounds": c.bounds.get(t)} for t, v in c.measured.items()}))  # fmt: skip
        inside = {t: contains(c.bounds.get(t), paper.cells[t]) for t in c.deltas()}
        deltas[setup.backbone].append(Row(DELTA, setup.backbone, setup.weights_name, f"Δ {label(setup, True)} vs {paper.model}", layer,
                                          {t: {"score": v, "inside": inside[t]} for t, v in c.deltas().items()}))  # fmt: skip
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


def _format_cell(row: Row, cell: dict[str, Any] | None, style: str) -> str:
    if cell is None or cell["score"] is None:
        return "–"
    if row.kind == DELTA:
        inside = "" if style == "none" or cell.get("inside") is None else " (in)" if cell["inside"] else " (out)"
        return f"{100 * cell['score']:+.1f}{inside}"
    if row.kind == PAPER:
        return percent(cell["score"])
    if "sets" not in cell:  # a measured score on a paper's window
        return show(cell["score"], cell.get("bounds"), style)
    seeds = f" ×{cell['seeds']}" if cell["seeds"] > 1 else ""
    mark = ("*" if cell["limited"] else "") + ("^" if cell.get("edge") else "")
    labels = "/".join(set_label(name) for name in cell["sets"].split("/"))
    return f"{show(cell['score'], cell.get('bounds'), style)}{seeds}{mark} ({labels})"


def _mean(row: Row, tasks: Sequence[str]) -> tuple[float | None, float | None]:
    """The row's mean over ``tasks`` (None unless every task has a score) and its half-width (None unless every task has an interval)."""
    cells = [row.cells.get(t) for t in tasks]
    if not tasks or any(c is None or c["score"] is None for c in cells):
        return None, None
    mean = sum(c["score"] for c in cells) / len(cells)  # type: ignore[index]
    bounds = [c.get("bounds") for c in cells]  # type: ignore[union-attr]
    if row.kind == DELTA or any(b is None for b in bounds):
        return mean, None
    return mean, mean_half([b.half(c["score"]) for b, c in zip(bounds, cells)])  # type: ignore[union-attr,index]


def _notes(rows: list[Row], style: str, with_weights: bool, papers: Sequence[Paper], why_not: list[str]) -> list[str]:
    cells = [c for r in rows if r.kind == MEASURED for c in r.cells.values()]
    notes = ["test score % (top-1 unless the column names another metric); (Ln) = block n, avg:A-B = mean of blocks A..B;",
             "best and last layer sets as stored by each cell (best chosen on val)"]  # fmt: skip
    if style != "none":
        shown = "the larger half of" if style == "pm" else "the ends of"
        notes.append(f"±: {shown} the 95% bootstrap interval over test examples, as each cell stored it (method: 'report cell'); "
                     "mean: tasks' intervals combined as independent; ±? = no interval (recorded before per-example outputs)")  # fmt: skip
    if any(c.get("seeds", 1) > 1 for c in cells):
        notes.append("×S = mean over S seeds (head init and data order vary, the split does not); its interval resamples "
                     "seeds and test examples together, from the per-example outputs")  # fmt: skip
    notes.append(RULE)
    if with_weights:
        notes.append("weights: the name of a --weights override (--name, or the file's or run folder's); empty = the card's weights")
    if papers:
        notes.append("paper rows: published numbers (results/published, and published/ in --cards folders); Δ = measured − "
                     "paper, in points, on the paper's own probe kind and layer window over the full test split; "
                     "(in)/(out): the published number lies inside/outside the measured 95% interval")  # fmt: skip
        notes += why_not
    if any(c.get("limited") for c in cells):
        notes.append("* measured on a --limit subset: a smoke number, ranked only against runs with the same limit")
    if any(c.get("edge") for c in cells):
        notes.append("^ the best head's lr or wd is the largest or smallest its grid tried (wd: the largest, or a smallest "
                     "above 0): the optimum may lie outside; see 'aimbench report cell' and widen the grid")  # fmt: skip
    return notes


def leaderboard(
    summaries: list[dict[str, Any]],
    papers: Sequence[Paper] = (),
    tasks: Sequence[str] | None = None,
    layers: dict[tuple[Setup, str], list[LayerScore]] | None = None,
    bounds: dict[tuple[Setup, str, str], Bounds] | None = None,
    edges: dict[tuple[Setup, str], list[str]] | None = None,
    style: str = "pm",
) -> Table:
    """The pivoted table over ``tasks`` (default: the measured ones, by name); ``layers``
    (``layer_scores``) holds what paper windows are looked up in: without it no Δ is computed;
    ``bounds`` (``cell_bounds``) each cell's interval, ``edges`` (``grid_edges``) the cells whose
    best head sits at a grid's edge; ``style``: how intervals show (``aimbench.report.intervals.STYLES``).

    ``Table.scores`` keeps the raw fractions for LaTeX bolding and HTML sorting, ``Table.hints``
    each score's interval in full for the HTML page's hover text.
    """
    tasks = list(tasks) if tasks is not None else sorted({s["task"] for s in summaries})
    metrics = {s["task"]: s["metric"] for s in summaries}
    by_setup, measured, label = _measured_rows(summaries, bounds or {}, edges or {})
    cards = {setup: _card_windows(cells) for setup, cells in by_setup.items()}
    comparisons, why_not = compare(list(by_setup), papers, layers or {}, cards, label)
    rows = arrange(measured, list(papers), _comparison_rows(comparisons, label))
    means = [_mean(row, tasks) for row in rows]
    ranks = tied_ranks([Ranked(i, row.rank_group, mean, half) for i, (row, (mean, half)) in enumerate(zip(rows, means))
                        if row.rank_group is not None and mean is not None])  # fmt: skip
    with_weights = any(r.weights for r in rows)
    table_rows, scores, hints = [], [], []
    for i, (row, (row_mean, row_half)) in enumerate(zip(rows, means)):
        if row.kind == DELTA:
            mean = "–" if row_mean is None else f"{100 * row_mean:+.1f}"
        elif row.kind == PAPER:
            mean = percent(row_mean)
        else:
            mean = show(row_mean, None if row_half is None else Bounds(row_mean - row_half, row_mean + row_half), style)  # type: ignore[operator]
        names = [row.backbone, *([row.weights] if with_weights else []), row.probe, row.layer]
        cells = [row.cells.get(t) or {} for t in tasks]
        table_rows.append([*names, *(_format_cell(row, row.cells.get(t), style) for t in tasks), mean, ranks.get(i, "")])
        position = float(ranks[i].split("-")[0]) if i in ranks else None
        scores.append([*(None for _ in names), *(c.get("score") for c in cells), row_mean, position])
        hints.append([*(None for _ in names), *(hover(c.get("score"), c.get("bounds")) if row.kind == MEASURED else None for c in cells),
                      None, None])  # fmt: skip
    headers = [task if metrics.get(task, "top1") == "top1" else f"{task} ({metrics[task]})" for task in tasks]
    columns = ["backbone", *(["weights"] if with_weights else []), "probe", "layer", *headers, "mean", "rank"]
    notes = _notes(rows, style, with_weights, papers, why_not)
    return Table("aimbench leaderboard", columns, table_rows, notes, scores=scores, kinds=[r.kind for r in rows], hints=hints)
