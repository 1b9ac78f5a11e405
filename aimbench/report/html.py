"""A static, self-contained HTML leaderboard: one file, no network resources, sortable.

The page carries its plots as data URIs and its sorting as a few lines of inline script, so it
can be mailed, attached to a paper's artifact, or opened from a cluster's shared disk with no
server. Each score cell keeps its raw value in ``data-sort`` so sorting is numeric.
"""

from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from pathlib import Path

from aimbench.atomic import atomic_write
from aimbench.report.curves import Curve
from aimbench.report.plots import grouped, render
from aimbench.report.tables import Table

PAGE = "index.html"
TITLE = "aimbench leaderboard"  # the page's heading: a table of that title gets no second one

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { padding: 0.25rem 0.6rem; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th { cursor: pointer; background: #f4f4f4; user-select: none; }
th[aria-sort="ascending"]::after { content: " ▲"; } th[aria-sort="descending"]::after { content: " ▼"; }
td.text, th.text { text-align: left; }
tr.paper td { font-style: italic; color: #555; } tr.delta td { color: #888; font-size: 0.85rem; }
.notes { color: #666; font-size: 0.85rem; } figure { display: inline-block; margin: 0.5rem; }
"""

# Sorts a table by the clicked column: numbers by data-sort, text otherwise; empty cells last.
_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var ascending = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach(function (other) { other.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[column];
        var raw = cell.getAttribute("data-sort");
        return raw === null || raw === "" ? (cell.textContent === "" || cell.textContent === "–" ? null : cell.textContent) : parseFloat(raw);
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) { return (x === null) - (y === null); }
        var order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def _table_html(table: Table, table_id: str, heading: bool = True) -> str:
    """The table as sortable HTML; ``heading=False`` where the page's own heading already names it."""
    numeric = [j for j in range(len(table.columns)) if table.scores and any(row[j] is not None for row in table.scores)]
    head = "".join(f'<th class="{"num" if j in numeric else "text"}">{html.escape(c)}</th>' for j, c in enumerate(table.columns))
    body = []
    for i, row in enumerate(table.rows):
        kind = table.kinds[i] if table.kinds else "measured"
        cells = []
        for j, text in enumerate(row):
            value = table.scores[i][j] if table.scores else None
            sort = "" if value is None else f' data-sort="{value!r}"'
            hint = table.hints[i][j] if table.hints else None
            title = "" if hint is None else f' title="{html.escape(hint)}"'
            cells.append(f'<td class="{"num" if j in numeric else "text"}"{sort}{title}>{html.escape(text)}</td>')
        body.append(f'<tr class="{kind}">{"".join(cells)}</tr>')
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in table.notes)
    title = f"<h2>{html.escape(table.title)}</h2>\n" if heading else ""
    return (f'{title}<table id="{table_id}" class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>\n<ul class="notes">{notes}</ul>')  # fmt: skip


def _figures_html(curves: list[Curve], relative: bool = False) -> str:
    figures = []
    for (task, probe), members in grouped(curves).items():
        data = base64.b64encode(render(members, "png", relative)).decode("ascii")
        caption = html.escape(f"{task}, {probe} probe")
        figures.append(
            f'<figure><img alt="layer curve: {caption}" src="data:image/png;base64,{data}"><figcaption>{caption}</figcaption></figure>'
        )
    return "\n".join(figures)


def write_html(folder: Path, leaderboard: Table, curves_table: Table, curves: list[Curve], subtitle: str, relative: bool = False) -> Path:
    """Write ``folder/index.html`` atomically and return its path."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{TITLE}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style></head>
<body>
<h1>{TITLE}</h1>
<p class="notes">{html.escape(subtitle)}; generated {stamp}. Click a column header to sort.</p>
{_table_html(leaderboard, "leaderboard", heading=leaderboard.title != TITLE)}
{_table_html(curves_table, "curves") if curves_table.rows else ""}
{_figures_html(curves, relative)}
<script>{_SCRIPT}</script>
</body></html>
"""
    path = folder / PAGE
    atomic_write(path, lambda handle: handle.write(page.encode("utf-8")))
    return path
