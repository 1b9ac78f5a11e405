"""``aimbench report compare A B``: is A really better than B, per task and over the suite?

Two backbones probed on one task predicted the *same* test examples, and their errors are
correlated (the hard images are hard for both), so their difference is measured example by
example from the per-example outputs each cell kept (the prediction sidecars), never from two
intervals side by side. Per task: the difference A − B of the stored choice (best layer set, or
``--layer last``) with its paired-bootstrap 95 % interval, and a p-value: the exact McNemar test
for top-1 (the discordant examples split 50/50 under the null), the paired bootstrap for other
metrics. Over the tasks, p-values are Holm-adjusted (family-wise 5 %), and the suite row gives
the mean difference with its interval, each task weighing the same as in the leaderboard's mean.

A cell pairs with the other backbone's cell of the same task, probe, protocol and image limit;
of several candidates (seeds, weights overrides, layer specs) the card's weights and the lowest
seed common to both sides are taken, and the table names the seed. A task where either side has
no sidecar (recorded before they were kept) is listed as such, never guessed.
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from aimbench.errors import UserError
from aimbench.report.filters import Filters
from aimbench.report.intervals import Bounds, show
from aimbench.report.outputs import Outputs, load_outputs
from aimbench.report.tables import Table
from aimbench.store.records import runs_dir

ALPHA = 0.05
# The CSV form's columns: every row has all of them (a row without outputs or a suite row leaves some empty).
LONG_COLUMNS = ("task", "probe", "seed", "metric", "n_test", "layer_set_a", "layer_set_b", "score_a", "score_b", "difference", "low", "high",
                "p_value", "p_method", "p_holm", "note")  # fmt: skip
NO_OUTPUTS = "no per-example outputs (re-run with this version)"

CELLS_SQL = """
SELECT backbone, task, probe, protocol, image_limit, seed, weights_key, layers_spec, dtype, file
FROM latest
WHERE backbone IN ($a, $b) AND {where}
ORDER BY task, probe, protocol, image_limit NULLS FIRST, weights_key <> '', seed, layers_spec, dtype
"""


@dataclass
class Pair:
    """One task's two cells (record files) and, once tested, the outcome."""

    task: str
    probe: str
    protocol: str
    image_limit: int | None
    seed: int
    files: tuple[str, str]
    outcome: dict[str, Any] | None = None  # None: a side has no per-example outputs


def check_backbones(con: duckdb.DuckDBPyConnection, names: tuple[str, str]) -> None:
    """One error line for names no record carries, with the closest names that do."""
    known = [row[0] for row in con.execute("SELECT DISTINCT backbone FROM latest ORDER BY backbone").fetchall()]
    unknown = [name for name in names if name not in known]
    if not unknown:
        if names[0] == names[1]:
            raise UserError(f"compare takes two different backbones; got '{names[0]}' twice")
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hints.append(f"'{name}'" + (f" (close: {', '.join(close)})" if close else ""))
    raise UserError(f"no records of backbone {' and '.join(hints)}; backbones with records: {', '.join(known[:8])}"
                    + (" ..." if len(known) > 8 else ""))  # fmt: skip


def pair_cells(con: duckdb.DuckDBPyConnection, a: str, b: str, filters: Filters) -> tuple[list[Pair], list[str]]:
    """The tasks both backbones have a cell of, one pair per (task, probe, protocol, limit); and the tasks only one side has."""
    where, params = Filters(tasks=filters.tasks, probes=filters.probes, since=filters.since).where()
    cursor = con.execute(CELLS_SQL.format(where=where), {"a": a, "b": b, **params})
    names = [d[0] for d in cursor.description]
    sides: dict[tuple[Any, ...], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for values in cursor.fetchall():
        row = dict(zip(names, values))
        sides[(row["task"], row["probe"], row["protocol"], row["image_limit"])][row["backbone"]].append(row)
    pairs, alone = [], []
    for (task, probe, protocol, limit), by in sides.items():
        if a not in by or b not in by:
            alone.append(f"{task} ({probe}: only {a if a in by else b})")
            continue
        first = _choose(by[a], by[b])
        pairs.append(Pair(task, probe, protocol, limit, first[0]["seed"], (first[0]["file"], first[1]["file"])))
    order = {t: i for i, t in enumerate(filters.order({p.task for p in pairs}))}
    return sorted(pairs, key=lambda p: (order[p.task], p.probe, p.protocol)), alone


def _choose(rows_a: list[dict[str, Any]], rows_b: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The card's weights first, then the lowest seed both sides have (rows come in that order)."""
    seeds_b = {r["seed"] for r in rows_b}
    for row in rows_a:
        if row["seed"] in seeds_b:
            return row, next(r for r in rows_b if r["seed"] == row["seed"])
    return rows_a[0], rows_b[0]


def _aligned(a: Outputs, b: Outputs, layer: str) -> tuple[np.ndarray, ...]:
    """Each side's predictions at its stored ``layer`` choice, on the same test examples in id order
    (``aimbench.store.predictions.paired``: two different test sets are one error)."""
    from aimbench.store.predictions import paired

    return paired(a[1], b[1], a[0][f"{layer}_layer_set"], b[0][f"{layer}_layer_set"])


Suite = dict[
    str, list[tuple[np.ndarray, np.ndarray, np.ndarray, str, int]]
]  # probe kind -> each task's (pred_a, pred_b, labels, metric, classes)


def run_tests(results_dir: Path, pairs: list[Pair], layer: str) -> Suite:
    """Test every pair that has outputs on both sides (``Pair.outcome``); returns what the suite rows
    resample, per probe kind (a task probed two ways is two measurements, never averaged together)."""
    from aimbench.stats.paired import mcnemar_exact, paired_bootstrap

    suite: Suite = defaultdict(list)
    for pair in pairs:
        loaded = [load_outputs(runs_dir(results_dir) / name) for name in pair.files]
        if loaded[0] is None or loaded[1] is None:
            continue
        record_a, record_b = loaded[0][0], loaded[1][0]
        pred_a, pred_b, labels = _aligned(loaded[0], loaded[1], layer)
        metric = record_a["metric"]
        num_classes = int((record_a.get("task_info") or {}).get("num_classes") or int(labels.max()) + 1)
        test = paired_bootstrap(pred_a, pred_b, labels, metric, num_classes)
        exact = metric == "top1"
        p = mcnemar_exact(pred_a == labels, pred_b == labels) if exact else test.p_value
        pair.outcome = {"metric": metric, "n": test.n, "test": test, "p": p, "p_method": "exact McNemar" if exact else "paired bootstrap",
                        "score_a": record_a[f"{layer}_test_score"], "score_b": record_b[f"{layer}_test_score"],
                        "bounds_a": _stored(record_a, layer), "bounds_b": _stored(record_b, layer),
                        "sets": (record_a[f"{layer}_layer_set"], record_b[f"{layer}_layer_set"])}  # fmt: skip
        suite[pair.probe].append((pred_a, pred_b, labels, metric, num_classes))
    return dict(suite)


def _stored(record: dict[str, Any], layer: str) -> Bounds | None:
    """The interval the record stored for its ``layer`` choice."""
    entry = next((e for e in record.get("layers") or [] if e.get("layer_set") == record[f"{layer}_layer_set"]), None)
    interval = (entry or {}).get("test_interval")
    return None if not interval else Bounds(interval["low"], interval["high"])


def difference(value: float, low: float, high: float) -> str:
    """``+2.3 [+0.8, +3.9]``: a difference in points with its 95 % interval."""
    return f"{100 * value:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


def p_text(p: float) -> str:
    """A p-value to 3 decimals; below 0.001 (the paired bootstrap's floor at 2,000 resamples) as ``<0.001``."""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def verdict(p_holm: float, value: float, a: str, b: str) -> str:
    if p_holm >= ALPHA:
        return "not significant"
    return f"{a} better" if value > 0 else f"{b} better"


def compare_view(
    con: duckdb.DuckDBPyConnection, results_dir: Path, a: str, b: str, filters: Filters, layer: str = "best", style: str = "pm"
) -> tuple[Table, list[dict[str, Any]]]:
    """The table of ``aimbench report compare`` and its long form for CSV."""
    from aimbench.stats.intervals import RESAMPLES, SEED  # scipy: imported only when a comparison runs

    check_backbones(con, (a, b))
    pairs, alone = pair_cells(con, a, b, filters)
    if not pairs:
        raise UserError(f"{a} and {b} have no task in common under these filters" + (f" ({', '.join(alone)})" if alone else ""))
    suite = run_tests(results_dir, pairs, layer)
    tested = [p for p in pairs if p.outcome is not None]
    for pair, adjusted in zip(tested, _holm([p.outcome["p"] for p in tested])):  # type: ignore[index]
        pair.outcome["p_holm"] = adjusted  # type: ignore[index]
    rows, long = [], []
    for pair in pairs:
        label = pair.probe + (f" · limit {pair.image_limit}" if pair.image_limit is not None else "") + f" · seed {pair.seed}"
        o = pair.outcome
        if o is None:
            rows.append([pair.task, label, "–", "–", "–", "–", NO_OUTPUTS, "–", "–", ""])
            long.append({"task": pair.task, "probe": pair.probe, "seed": pair.seed, "note": NO_OUTPUTS})
            continue
        t = o["test"]
        rows.append([pair.task, label, o["metric"], str(o["n"]), show(o["score_a"], o["bounds_a"], style), show(o["score_b"], o["bounds_b"], style),
                     difference(t.difference, t.low, t.high), f"{p_text(o['p'])} ({o['p_method']})", p_text(o["p_holm"]),
                     verdict(o["p_holm"], t.difference, a, b)])  # fmt: skip
        long.append({"task": pair.task, "probe": pair.probe, "seed": pair.seed, "metric": o["metric"], "n_test": o["n"],
                     "layer_set_a": o["sets"][0], "layer_set_b": o["sets"][1], "score_a": o["score_a"], "score_b": o["score_b"],
                     "difference": t.difference, "low": t.low, "high": t.high, "p_value": o["p"], "p_method": o["p_method"],
                     "p_holm": o["p_holm"], "note": ""})  # fmt: skip
    for probe, tasks in suite.items():
        if len(tasks) < 2:
            continue
        from aimbench.stats.paired import suite_difference

        t = suite_difference(tasks)
        rows.append([f"suite mean ({len(tasks)} tasks)", probe if len(suite) > 1 else "", "", str(t.n), "", "",
                     difference(t.difference, t.low, t.high), f"{p_text(t.p_value)} (paired bootstrap)", "",
                     verdict(t.p_value, t.difference, a, b)])  # fmt: skip
        long.append({"task": "suite mean", "probe": probe, "n_test": t.n, "difference": t.difference, "low": t.low, "high": t.high,
                     "p_value": t.p_value, "p_method": "paired bootstrap", "note": f"{len(tasks)} tasks"})  # fmt: skip
    notes = [f"A = {a}, B = {b}; each side's {layer} layer set as its cell stored it; scores % with their stored 95% intervals;",
             f"A − B in points on the same test examples (n), with its paired-bootstrap 95% percentile interval ({RESAMPLES:,} resamples, seed {SEED});",
             "p: exact McNemar for top-1, paired bootstrap otherwise; p Holm: adjusted by Holm's step-down over the "
             f"{len(tested)} task(s) tested (family-wise {ALPHA:.0%}); verdict at {ALPHA:.0%} on p Holm;",
             "suite mean: every task weighs the same, each task's examples resampled on its own (not Holm-adjusted: one question)"]  # fmt: skip
    if alone:
        notes.append("not compared (one side only): " + ", ".join(alone))
    columns = ["task", "probe", "metric", "n", "A", "B", "A − B [95% CI]", "p", "p Holm", "verdict"]
    return Table(f"{a} (A) vs {b} (B)", columns, rows, notes), [{"a": a, "b": b, **dict.fromkeys(LONG_COLUMNS), **row} for row in long]


def _holm(p_values: list[float]) -> list[float]:
    from aimbench.stats.paired import holm

    return holm(p_values) if p_values else []
