"""Layer curves: the probe's score against block index, per setup and task.

The AIM paper's observation (its Table 7, Fig. 7) is that the best features are not at the
last block: the curve peaks in the upper-middle of the trunk. The terminal view shows each
curve as a sparkline with the best and the last layer set side by side, and the gap between
them, so that peak is visible at a glance; ``aimbench.report.plots`` draws the same curves.
Only single-block layer sets are points of a curve (windows have no single depth); seeds are
averaged per block. Best and last are never chosen here: they are the layer sets each record
stored when its cell finished (``best_layer_set``, chosen on val), the same ones the leaderboard,
``report cell`` and ``layer_metrics`` show. Over several seeds the best score is the mean of each
seed's own choice, as in the leaderboard, and every block some seed chose is marked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from aimbench.report.filters import Filters
from aimbench.report.intervals import Bounds, apart, show
from aimbench.report.setups import Setup, setup_sql
from aimbench.report.tables import Table, set_label

CURVES_SQL = """
SELECT {setup}, task, any_value(weights_name) AS weights_name, any_value(metric) AS metric, layer,
       avg(val_score) AS val_score, avg(test_score) AS test_score, count(*) AS seeds,
       CASE WHEN count(*) = 1 THEN any_value(test_low) END AS test_low, CASE WHEN count(*) = 1 THEN any_value(test_high) END AS test_high
FROM layer_metrics
WHERE len(blocks) = 1 AND {where}
GROUP BY {setup}, task, layer
ORDER BY task, probe, backbone, layer
"""

CHOICES_SQL = """
SELECT {setup}, task,
       list(DISTINCT best_layer_set ORDER BY best_layer_set) AS best_sets, list(DISTINCT best_blocks) AS best_blocks,
       avg(best_test_score) AS best_test,
       list(DISTINCT last_layer_set ORDER BY last_layer_set) AS last_sets, list(DISTINCT last_blocks) AS last_blocks,
       avg(last_test_score) AS last_test,
       max(CAST(json_extract(backbone_info, '$.depth') AS INTEGER)) AS depth, any_value(n_test) AS n_test
FROM latest
WHERE {where}
GROUP BY {setup}, task
"""

_BARS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class Choice:
    """The layer sets the records of one curve stored as best (or last), and their mean test score."""

    sets: tuple[str, ...]
    blocks: tuple[tuple[int, ...], ...]  # per chosen set; a window has several blocks
    test: float

    @property
    def label(self) -> str:
        return "/".join(set_label(name) for name in self.sets)

    @property
    def deepest(self) -> int:
        return max(blocks[-1] for blocks in self.blocks)

    def single_blocks(self) -> list[int]:
        """Chosen sets that are points of the curve (single blocks)."""
        return sorted(blocks[0] for blocks in self.blocks if len(blocks) == 1)


@dataclass
class Curve:
    setup: Setup
    task: str
    metric: str
    blocks: list[int] = field(default_factory=list)
    val: list[float] = field(default_factory=list)
    test: list[float] = field(default_factory=list)
    low: list[float | None] = field(default_factory=list)  # per block, the stored 95% interval (None: several seeds, or none stored)
    high: list[float | None] = field(default_factory=list)
    seeds: int = 0
    depth: int | None = None  # the backbone's blocks (backbone_info.depth), for the relative-depth axis
    n_test: int | None = None
    best: Choice | None = None
    last: Choice | None = None

    def bounds(self, i: int) -> Bounds | None:
        low, high = self.low[i], self.high[i]
        return None if low is None or high is None else Bounds(low, high)

    def tied_with_best(self) -> list[int] | None:
        """The blocks whose test score is not apart from the best single block's (the val-selected one;
        ``aimbench.report.intervals.apart``); None where the intervals or a single-block best are missing."""
        if self.best is None or len(self.best.single_blocks()) != 1:
            return None
        top = self.blocks.index(self.best.single_blocks()[0])
        top_bounds = self.bounds(top)
        if top_bounds is None:
            return None
        tied = []
        for i, block in enumerate(self.blocks):
            own = self.bounds(i)
            if own is None:
                return None
            if i != top and not apart(self.test[top], top_bounds.half(self.test[top]), self.test[i], own.half(self.test[i])):
                tied.append(block)
        return tied

    def x(self, relative: bool = False) -> list[float]:
        """The blocks, or with ``relative`` (block + 1) / depth, so the last block of any backbone sits at 1."""
        if not relative or not self.depth:
            return [float(b) for b in self.blocks]
        return [(b + 1) / self.depth for b in self.blocks]

    @property
    def backbone(self) -> str:
        return self.setup.backbone

    @property
    def probe(self) -> str:
        return self.setup.probe

    @property
    def label(self) -> str:
        """The legend entry: the backbone, its weights override and what sets the setup apart."""
        name = f"{self.backbone}@{self.setup.weights_name}" if self.setup.weights_name else self.backbone
        return " · ".join([name, *self.setup.qualifiers()])


def layer_curves(con: duckdb.DuckDBPyConnection, filters: Filters = Filters()) -> list[Curve]:
    where, params = filters.where()
    cursor = con.execute(CURVES_SQL.format(setup=setup_sql(), where=where), params)
    names = [d[0] for d in cursor.description]
    curves: dict[tuple[Setup, str], Curve] = {}
    for values in cursor.fetchall():
        row = dict(zip(names, values))
        curve = curves.setdefault((Setup.of(row), row["task"]), Curve(Setup.of(row), row["task"], row["metric"], seeds=row["seeds"]))
        curve.blocks.append(row["layer"])
        curve.val.append(row["val_score"])
        curve.test.append(row["test_score"])
        curve.low.append(row["test_low"])
        curve.high.append(row["test_high"])
        curve.seeds = min(curve.seeds, row["seeds"])
    cursor = con.execute(CHOICES_SQL.format(setup=setup_sql(), where=where), params)
    names = [d[0] for d in cursor.description]
    for values in cursor.fetchall():
        row = dict(zip(names, values))
        chosen = curves.get((Setup.of(row), row["task"]))
        if chosen is not None:
            chosen.best = Choice(tuple(row["best_sets"]), tuple(tuple(b) for b in row["best_blocks"]), row["best_test"])
            chosen.last = Choice(tuple(row["last_sets"]), tuple(tuple(b) for b in row["last_blocks"]), row["last_test"])
            chosen.depth, chosen.n_test = row["depth"], row["n_test"]
    order = {task: i for i, task in enumerate(filters.order({c.task for c in curves.values()}))}
    return sorted(curves.values(), key=lambda c: (order[c.task], c.probe, c.backbone, c.label))


def sparkline(values: list[float], low: float | None = None, high: float | None = None) -> str:
    """Bars for ``values`` on the scale ``low..high`` (default: their own min..max)."""
    low = min(values) if low is None else low
    high = max(values) if high is None else high
    span = (high - low) or 1.0
    return "".join(_BARS[min(len(_BARS) - 1, max(0, round((v - low) / span * (len(_BARS) - 1))))] for v in values)


def _tied_label(curve: Curve) -> str:
    tied = curve.tied_with_best()
    if tied is None:
        return "?"
    return ", ".join(set_label(str(b)) for b in tied) or "none"


def curves_table(curves: list[Curve], style: str = "pm") -> Table:
    """One row per curve; sparklines of one task share a scale, so their heights compare across backbones."""
    scale: dict[str, tuple[float, float]] = {}
    for c in curves:
        low, high = scale.get(c.task, (min(c.test), max(c.test)))
        scale[c.task] = (min(low, *c.test), max(high, *c.test))
    rows, scores = [], []
    for c in curves:
        best, last = c.best, c.last
        assert best is not None and last is not None  # every curve comes from records that store both
        best_bounds = c.bounds(c.blocks.index(best.single_blocks()[0])) if len(best.single_blocks()) == 1 else None
        last_bounds = c.bounds(c.blocks.index(last.single_blocks()[0])) if len(last.single_blocks()) == 1 else None
        rows.append([c.task, c.label, c.probe, f"{c.blocks[0]}–{c.blocks[-1]}", sparkline(c.test, *scale[c.task]),
                     f"{best.label}: {show(best.test, best_bounds, style)}", _tied_label(c),
                     f"{last.label}: {show(last.test, last_bounds, style)}",
                     f"{100 * (best.test - last.test):+.1f}", f"{best.deepest / max(last.deepest, 1):.2f}"])  # fmt: skip
        scores.append([None, None, None, None, None, best.test, None, last.test, best.test - last.test, None])
    notes = ["curve: test score per block, on one scale per task (its curves' min..max), so heights compare across backbones;",
             "best and last: the layer sets each record stored (best chosen on val when its cell finished; a window avg:A-B is",
             "not a point of the curve); seeds averaged; ± = the stored 95% interval (±?: several seeds, or none stored);",
             "tied with best: blocks whose test score is not apart from the best block's (|difference| ≤ sqrt(h_a² + h_b²));",
             "? = no intervals to tell; depth = deepest block of the best set / of the last set (the AIM paper finds the peak below the last block)"]  # fmt: skip
    columns = [
        "task",
        "backbone",
        "probe",
        "blocks",
        "curve (test)",
        "best (val-selected)",
        "tied with best",
        "last",
        "best − last",
        "depth",
    ]
    return Table("layer curves", columns, rows, notes, scores=scores)
