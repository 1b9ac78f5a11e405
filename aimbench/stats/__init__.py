"""Statistics on per-example test predictions: intervals on scores and paired comparisons.

Pure numpy and scipy, on the lowest floor: the store computes a record's intervals with it when
a cell finishes, and reports compare backbones with it, without either depending on the other.
"""

from aimbench.stats.intervals import Interval, score_interval
from aimbench.stats.paired import PairedTest, holm, mcnemar_exact, paired_bootstrap, suite_difference

__all__ = ["Interval", "PairedTest", "holm", "mcnemar_exact", "paired_bootstrap", "score_interval", "suite_difference"]
