"""Reports over the results store: leaderboard, layer curves, cell detail, in several formats."""

from aimbench.report.cell_detail import layer_table
from aimbench.report.leaderboard import cell_summaries, leaderboard
from aimbench.report.render import FORMATS, to_csv, to_latex, to_markdown, to_rich
from aimbench.report.tables import Table

__all__ = ["FORMATS", "Table", "cell_summaries", "layer_table", "leaderboard", "to_csv", "to_latex", "to_markdown", "to_rich"]
