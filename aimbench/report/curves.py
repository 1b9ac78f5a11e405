"""Layer curves: the probe's score against block index, per backbone, task and probe.

The AIM paper's observation (its Table 7, Fig. 7) is that the best features are not at the
last block: the curve peaks in the upper-middle of the trunk. The terminal view shows each
curve as a sparkline with the val-selected block and the last block side by side, and the gap
between them, so that peak is visible at a glance; ``aimbench.report.plots`` draws the same
curves. Only single-block layer sets are points of a curve (windows have no single depth);
seeds are averaged per block, and the best block is chosen on the mean val score.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from aimbench.report.filters import Filters
from aimbench.report.tables import Table, percent

CURVES_SQL = """
SELECT backbone, task, probe, any_value(metric) AS metric, layer,
       avg(val_score) AS val_score, avg(test_score) AS test_score, count(*) AS seeds
FROM layer_metrics
WHERE len(blocks) = 1 AND {where}
GROUP BY backbone, task, probe, layer
ORDER BY task, probe, backbone, layer
"""

_BARS = "▁▂▃▄▅▆▇█"


@dataclass
class Curve:
    backbone: str
    task: str
    probe: str
    metric: str
    blocks: list[int]
    val: list[float]
    test: list[float]
    seeds: int

    @property
    def best_index(self) -> int:
        """Position of the block with the best val score (the deepest on ties, as the probes choose)."""
        best = max(self.val)
        return max(i for i, v in enumerate(self.val) if v == best)

    @property
    def best_block(self) -> int:
        return self.blocks[self.best_index]


def layer_curves(con: duckdb.DuckDBPyConnection, filters: Filters = Filters()) -> list[Curve]:
    where, params = filters.where()
    curves: dict[tuple[str, str, str], Curve] = {}
    for backbone, task, probe, metric, layer, val, test, seeds in con.execute(CURVES_SQL.format(where=where), params).fetchall():
        curve = curves.setdefault((backbone, task, probe), Curve(backbone, task, probe, metric, [], [], [], seeds))
        curve.blocks.append(layer)
        curve.val.append(val)
        curve.test.append(test)
        curve.seeds = min(curve.seeds, seeds)
    order = {task: i for i, task in enumerate(filters.order({c.task for c in curves.values()}))}
    return sorted(curves.values(), key=lambda c: (order[c.task], c.probe, c.backbone))


def sparkline(values: list[float]) -> str:
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(_BARS[round((v - low) / span * (len(_BARS) - 1))] for v in values)


def curves_table(curves: list[Curve]) -> Table:
    rows, scores = [], []
    for c in curves:
        best, last = c.best_index, len(c.blocks) - 1
        rows.append([c.task, c.backbone, c.probe, f"{c.blocks[0]}–{c.blocks[-1]}", sparkline(c.test),
                     f"L{c.blocks[best]}: {percent(c.test[best])}", f"L{c.blocks[last]}: {percent(c.test[last])}",
                     f"{100 * (c.test[best] - c.test[last]):+.1f}", f"{c.blocks[best] / max(c.blocks[last], 1):.2f}"])  # fmt: skip
        scores.append([None, None, None, None, None, c.test[best], c.test[last], c.test[best] - c.test[last], None])
    notes = ["curve: test score per block, scaled to its own min..max; best block chosen on val (seeds averaged);",
             "depth = best block / last block (the AIM paper finds the peak below the last block)"]  # fmt: skip
    columns = ["task", "backbone", "probe", "blocks", "curve (test)", "best (val-selected)", "last", "best − last", "depth"]
    return Table("layer curves", columns, rows, notes, scores=scores)
