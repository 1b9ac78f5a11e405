"""Reports over the results store: leaderboard and layer tables, in several formats."""

from aimbench.report.render import FORMATS, to_csv, to_markdown, to_rich
from aimbench.report.tables import Table, cell_summaries, layer_table, leaderboard

__all__ = ["FORMATS", "Table", "cell_summaries", "layer_table", "leaderboard", "to_csv", "to_markdown", "to_rich"]
