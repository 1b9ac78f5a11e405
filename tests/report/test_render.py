"""Renderers: LaTeX escaping and bolding, and the rich table's row styles."""

from __future__ import annotations

from aimbench.report.render import latex_escape, to_latex, to_rich
from aimbench.report.tables import Table


def board() -> Table:
    return Table(
        "board_1 & co",
        ["backbone", "probe", "layer", "t_1", "mean", "rank"],
        [["a", "linear", "best layer", "85.0±7.1 (L1)", "85.0", "2"],
         ["a", "M [paper]", "best layer", "90.0", "90.0", "1"],
         ["a", "Δ vs M", "best layer", "-5.0", "-5.0", ""],
         ["b", "linear", "best layer", "90.0* (L2)", "90.0", "1"]],
        ["score % of 100"],
        scores=[[None, None, None, 0.85, 0.85, 2], [None, None, None, 0.90, 0.90, 1], [None, None, None, 0.95, 0.95, None],
                [None, None, None, 0.90, 0.90, 1]],
        kinds=["measured", "paper", "delta", "measured"],
    )  # fmt: skip


def test_latex_is_booktabs_with_the_best_per_column_in_bold() -> None:
    lines = to_latex(board()).splitlines()
    assert lines[:5] == [r"% board\_1 \& co", r"\begin{tabular}{lllrrr}", r"\toprule",
                         r"backbone & probe & layer & t\_1 & mean & rank \\", r"\midrule"]  # fmt: skip
    assert lines[5] == r"a & linear & best layer & 85.0$\pm$7.1 (L1) & 85.0 & 2 \\"
    assert lines[6] == r"a & M [paper] & best layer & \textbf{90.0} & \textbf{90.0} & 1 \\"  # ties are both bold
    assert lines[7] == r"a & $\Delta$ vs M & best layer & -5.0 & -5.0 &  \\"  # a Δ row is never bold, though 0.95 is highest
    assert lines[8] == r"\addlinespace"
    assert lines[9] == r"b & linear & best layer & \textbf{90.0* (L2)} & \textbf{90.0} & 1 \\"  # rank is never bold
    assert lines[-3:] == [r"\bottomrule", r"\end{tabular}", r"% score \% of 100"]


def test_latex_escapes_every_special_character() -> None:
    assert latex_escape("a_b&c%d$e#f{g}h~i^j\\k") == r"a\_b\&c\%d\$e\#f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k"
    assert latex_escape("1–2 −3 ±") == r"1--2 $-$3 $\pm$"


def test_rich_styles_paper_and_delta_rows() -> None:
    rich = to_rich(board())
    assert [row.style for row in rich.rows] == [None, "italic", "dim", None]
    assert rich.columns[3].justify == "right" and rich.columns[0].justify == "left"
