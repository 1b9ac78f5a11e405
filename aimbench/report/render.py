"""Rendering report tables: a rich terminal table, Markdown, CSV, or LaTeX (booktabs)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from typing import Any

from rich.table import Table as RichTable

from aimbench.report.tables import Table

FORMATS = ("table", "markdown", "csv", "latex")


def _looks_numeric(text: str) -> bool:
    head = text.split(" ", 1)[0].split("±", 1)[0].rstrip("*").lstrip("+-")
    return head in ("–", "") or head.replace(".", "", 1).replace("/", "").replace("e-", "").isdigit()


def to_rich(table: Table) -> RichTable:
    rich = RichTable(title=table.title, caption="\n".join(table.notes) or None, caption_justify="left")
    for i, column in enumerate(table.columns):
        numeric = bool(table.rows) and all(_looks_numeric(row[i]) for row in table.rows)
        rich.add_column(column, justify="right" if numeric else "left")
    styles = {"paper": "italic", "delta": "dim"}
    for i, row in enumerate(table.rows):
        rich.add_row(*row, style=styles.get(table.kinds[i]) if table.kinds else None)
    return rich


def to_markdown(table: Table) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    lines = [f"**{table.title}**", "", line(table.columns), line(["---"] * len(table.columns))]
    lines += [line(row) for row in table.rows]
    lines += [""] + [f"_{note}_" for note in table.notes]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    """Long-format CSV (one row per backbone, task, probe) with raw fractions, for spreadsheets."""
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "–": "--", "−": "$-$", "Δ": r"$\Delta$", "★": r"$\star$", "×": r"$\times$"}  # fmt: skip


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


_INTERVAL = re.compile(r" ±(\d+\.\d+|\?)")


def latex_cell(text: str) -> str:
    """A cell escaped for LaTeX, an interval's ``78.5 ±0.4`` set as ``78.5\\,{\\scriptsize$\\pm$0.4}``."""
    parts = _INTERVAL.split(text)  # text, half, text, half, ..., text
    out = [latex_escape(parts[0])]
    for half, rest in zip(parts[1::2], parts[2::2]):
        out.append(rf"\,{{\scriptsize$\pm${latex_escape(half)}}}" + latex_escape(rest))
    return "".join(out)


def _best_per_column(table: Table) -> set[tuple[int, int]]:
    """(row, column) of the highest score per column among measured and paper rows (rank excluded)."""
    if table.scores is None or table.kinds is None:
        return set()
    best: set[tuple[int, int]] = set()
    for j, column in enumerate(table.columns):
        if column == "rank":
            continue
        candidates = [(score, i) for i, row in enumerate(table.scores) if (score := row[j]) is not None and table.kinds[i] != "delta"]
        if candidates:
            top = max(value for value, _ in candidates)
            best |= {(i, j) for value, i in candidates if value == top}
    return best


def to_latex(table: Table) -> str:
    """A booktabs tabular, best value per column in bold; paste into a paper with \\usepackage{booktabs}."""
    bold = _best_per_column(table)
    numeric = [bool(table.rows) and all(_looks_numeric(row[j]) or row[j] == "" for row in table.rows) for j in range(len(table.columns))]
    spec = "".join("r" if n else "l" for n in numeric)
    lines = [f"% {latex_escape(table.title)}", r"\begin{tabular}{" + spec + "}", r"\toprule",
             " & ".join(latex_escape(c) for c in table.columns) + r" \\", r"\midrule"]  # fmt: skip
    previous_kind = None
    for i, row in enumerate(table.rows):
        kind = table.kinds[i] if table.kinds else None
        if previous_kind == "delta" and kind == "measured":
            lines.append(r"\addlinespace")
        cells = [rf"\textbf{{{latex_cell(c)}}}" if (i, j) in bold else latex_cell(c) for j, c in enumerate(row)]
        lines.append(" & ".join(cells) + r" \\")
        previous_kind = kind
    lines += [r"\bottomrule", r"\end{tabular}"] + [f"% {latex_escape(note)}" for note in table.notes]
    return "\n".join(lines) + "\n"
