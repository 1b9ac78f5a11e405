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
from aimbench.report.setups import Setup, setup_sql
from aimbench.report.tables import Table, percent, set_label

CURVES_SQL = """
SELECT {setup}, task, any_value(weights_name) AS weights_name, any_value(metric) AS metric, layer,
       avg(val_score) AS val_score, avg(test_score) AS test_score, count(*) AS seeds
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
       avg(last_test_score) AS last_test
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
    seeds: int = 0
    best: Choice | None = None
    last: Choice | None = None

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
        curve.seeds = min(curve.seeds, row["seeds"])
    cursor = con.execute(CHOICES_SQL.format(setup=setup_sql(), where=where), params)
    names = [d[0] for d in cursor.description]
    for values in cursor.fetchall():
        row = dict(zip(names, values))
        chosen = curves.get((Setup.of(row), row["task"]))
        if chosen is not None:
            chosen.best = Choice(tuple(row["best_sets"]), tuple(tuple(b) for b in row["best_blocks"]), row["best_test"])
            chosen.last = Choice(tuple(row["last_sets"]), tuple(tuple(b) for b in row["last_blocks"]), row["last_test"])
    order = {task: i for i, task in enumerate(filters.order({c.task for c in curves.values()}))}
    return sorted(curves.values(), key=lambda c: (order[c.task], c.probe, c.backbone, c.label))


def sparkline(values: list[float]) -> str:
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(_BARS[round((v - low) / span * (len(_BARS) - 1))] for v in values)


def curves_table(curves: list[Curve]) -> Table:
    rows, scores = [], []
    for c in curves:
        best, last = c.best, c.last
        assert best is not None and last is not None  # every curve comes from records that store both
        rows.append([c.task, c.label, c.probe, f"{c.blocks[0]}–{c.blocks[-1]}", sparkline(c.test),
                     f"{best.label}: {percent(best.test)}", f"{last.label}: {percent(last.test)}",
                     f"{100 * (best.test - last.test):+.1f}", f"{best.deepest / max(last.deepest, 1):.2f}"])  # fmt: skip
        scores.append([None, None, None, None, None, best.test, last.test, best.test - last.test, None])
    notes = ["curve: test score per block, scaled to its own min..max; best and last: the layer sets each record stored",
             "(best chosen on val when its cell finished; a window avg:A-B is not a point of the curve); seeds averaged;",
             "depth = deepest block of the best set / of the last set (the AIM paper finds the peak below the last block)"]  # fmt: skip
    columns = ["task", "backbone", "probe", "blocks", "curve (test)", "best (val-selected)", "last", "best − last", "depth"]
    return Table("layer curves", columns, rows, notes, scores=scores)
