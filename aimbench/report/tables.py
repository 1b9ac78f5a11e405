"""The display-agnostic table every view produces, and the number formats they share."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Table:
    """Display strings, ready for the terminal, Markdown, CSV, LaTeX or HTML.

    ``scores`` (optional) holds, per row and column, the raw number behind a cell or None, so
    that LaTeX can bold the best value per column and HTML can sort numerically; ``kinds``
    (optional) tells measured, paper and Δ rows apart (Δ rows are never bold); ``hints``
    (optional) what the HTML page shows on hover, such as a score's interval in full.
    """

    title: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    scores: list[list[float | None]] | None = None
    kinds: list[str] | None = None
    hints: list[list[str | None]] | None = None  # per row and column: hover text (the HTML page's title attribute)


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def set_label(name: str) -> str:
    """``L5`` for a single block, the set's own name (``avg:18-23``, ``last=avg:18-23``) otherwise."""
    return f"L{name}" if name.isdigit() else name


def hparams_label(hparams: dict[str, float] | None) -> str:
    short = {"learning_rate": "lr", "weight_decay": "wd"}
    return "–" if not hparams else " ".join(f"{short.get(k, k)}={v:g}" for k, v in hparams.items())
