"""Intervals over several seeds of one cell, recomputed from their per-example outputs and cached.

Seeds vary the head's initialisation and data order only, never the split, so every seed scores
the same test examples; one interval over them resamples seeds and examples together
(``aimbench.stats.intervals.score_interval`` with an (S, N) array), each seed at the layer set
it chose itself (as the leaderboard's mean is the mean of each seed's own choice). The stored
per-seed intervals cannot be combined into that, so it is computed at report time, once: the
result is cached in ``RESULTS/.cache/seed-intervals.json`` under the sidecars' checksums, the
layer sets and the metric, so a second report reads no sidecar at all. A seed without a sidecar
makes the combined interval unavailable (``±?``), and no file is opened to find that out.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from aimbench.atomic import atomic_write
from aimbench.report.filters import Filters
from aimbench.report.intervals import Bounds
from aimbench.report.outputs import Outputs, load_outputs
from aimbench.report.setups import Setup, setup_sql
from aimbench.store.cache import CACHE_DIR
from aimbench.store.records import runs_dir

CACHE_FILE = "seed-intervals.json"

# Cells of several seeds that all kept their outputs, one row each: nothing of the others reaches Python.
SEEDS_SQL = """
SELECT {setup}, task, any_value(metric) AS metric,
       list(struct_pack(file := file, sidecar := predictions.sha256, best_layer_set := best_layer_set, last_layer_set := last_layer_set)
            ORDER BY seed) AS members
FROM latest
WHERE {where}
GROUP BY {setup}, task
HAVING count(*) > 1 AND count(predictions) = count(*)
"""

Key = tuple[Setup, str, str]  # setup, task, "best" | "last"


def seed_bounds(con: duckdb.DuckDBPyConnection, results_dir: Path, filters: Filters, cells: set[tuple[Setup, str]]) -> dict[Key, Bounds]:
    """Seed-combined intervals of the cells named, where every seed kept its outputs."""
    where, params = filters.where()
    cursor = con.execute(SEEDS_SQL.format(setup=setup_sql(), where=where), params)
    names = [d[0] for d in cursor.description]
    seeds: dict[tuple[Setup, str], list[dict[str, Any]]] = {}
    for values in cursor.fetchall():
        row = dict(zip(names, values))
        if (Setup.of(row), row["task"]) in cells:
            seeds[(Setup.of(row), row["task"])] = [{**m, "metric": row["metric"]} for m in row["members"]]
    cache_path = results_dir / CACHE_DIR / CACHE_FILE
    cache = _read_cache(cache_path)
    out: dict[Key, Bounds] = {}
    missing: dict[str, tuple[Key, list[dict[str, Any]], str]] = {}
    for (setup, task), members in seeds.items():
        for which in ("best", "last"):
            key = _cache_key(members, which)
            if key in cache:
                out[(setup, task, which)] = Bounds(cache[key][0], cache[key][1], seeds=len(members))
            else:
                missing[key] = ((setup, task, which), members, which)
    if missing:
        for key, (where_to, members, which) in missing.items():
            loaded = [load_outputs(runs_dir(results_dir) / m["file"]) for m in members]
            combined = None if any(x is None for x in loaded) else _combined(loaded, [m[f"{which}_layer_set"] for m in members])  # type: ignore[arg-type]
            if combined is not None:
                out[where_to] = combined
                cache[key] = [combined.low, combined.high]
        _write_cache(cache_path, cache)
    return out


def _cache_key(members: list[dict[str, Any]], which: str) -> str:
    parts = [members[0]["metric"], *sorted(f"{m['sidecar']}:{m[f'{which}_layer_set']}" for m in members)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _read_cache(path: Path) -> dict[str, list[float]]:
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, or torn: derived data, recomputed
        return {}
    return cache if isinstance(cache, dict) else {}


def _write_cache(path: Path, cache: dict[str, list[float]]) -> None:
    text = json.dumps(cache, sort_keys=True).encode()
    try:
        atomic_write(path, lambda handle: handle.write(text))
    except OSError:  # a read-only results folder: recomputed next time
        pass


def _combined(loaded: list[Outputs], layer_sets: list[str]) -> Bounds | None:
    """One interval over all seeds: predictions stacked (S, N) on the examples every seed scored, in id order."""
    from aimbench.stats.intervals import score_interval

    common = set.intersection(*(set(p.example_ids.tolist()) for _, p in loaded))
    stacked, labels = [], np.zeros(0)
    for (_, predictions), layer_set in zip(loaded, layer_sets):
        if layer_set not in predictions.by_layer_set:
            return None
        keep = np.isin(predictions.example_ids, list(common))
        order = np.argsort(predictions.example_ids[keep], kind="stable")
        stacked.append(np.asarray(predictions.by_layer_set[layer_set])[keep][order])
        labels = np.asarray(predictions.labels)[keep][order]
    record = loaded[0][0]
    num_classes = int((record.get("task_info") or {}).get("num_classes") or (int(labels.max()) + 1))
    interval = score_interval(np.stack(stacked), labels, record["metric"], num_classes)
    return Bounds(interval.low, interval.high, seeds=len(stacked))
