"""How a score's 95 % interval is shown, and when two scores count as apart.

Every measured score in a report carries the bootstrap interval its cell stored when it finished
(``layers[i].test_interval``; the ``layer_metrics`` columns ``test_low``/``test_high``, NULL for
records written before), so reports
never resample and stay fast over 100k records. Shown as ``78.5 ±0.4``: the larger of the two
halves, so an asymmetric interval (a score near 0 or 100 %) is never shown narrower than it is;
``--interval range`` shows both ends, ``78.5 (78.1–78.9)``, and ``--interval none`` the bare
score. A record written before intervals were kept shows ``78.5 ±?``: unavailable, never guessed.

Two scores are *apart* when their difference exceeds the half-width of an unpaired 95 % interval
on it, ``sqrt(h_a² + h_b²)`` (each interval treated as independent and normal). That is what the
leaderboard's tied ranks and the layer curves' "tied with best" use: it needs only the stored
intervals, and it is conservative (two backbones scored on the same test examples are positively
correlated, so the paired test of ``aimbench report compare`` separates at least as much).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

LEVEL = 0.95
STYLES = ("pm", "range", "none")
UNAVAILABLE = "?"


@dataclass(frozen=True)
class Bounds:
    """A score's interval as fractions, and how many seeds it combines (1: test examples only)."""

    low: float
    high: float
    seeds: int = 1

    def half(self, score: float) -> float:
        """The larger half: an asymmetric interval is never shown narrower than it is."""
        return max(score - self.low, self.high - score, 0.0)


def show(score: float | None, bounds: Bounds | None, style: str = "pm") -> str:
    """``78.5 ±0.4`` (pm), ``78.5 (78.1–78.9)`` (range) or ``78.5`` (none); ``±?`` without an interval."""
    if score is None:
        return "–"
    text = f"{100 * score:.1f}"
    if style == "none":
        return text
    if style == "range":
        return f"{text} ({UNAVAILABLE})" if bounds is None else f"{text} ({100 * bounds.low:.1f}–{100 * bounds.high:.1f})"
    return f"{text} ±{UNAVAILABLE}" if bounds is None else f"{text} ±{100 * bounds.half(score):.1f}"


def hover(score: float | None, bounds: Bounds | None, n_test: int | None = None) -> str | None:
    """The HTML tooltip of a score: its interval in full, and what it resamples."""
    if score is None:
        return None
    if bounds is None:
        return "no interval: recorded before aimbench kept per-example outputs"
    over = f"{bounds.seeds} seeds and test examples" if bounds.seeds > 1 else "test examples"
    examples = f", n_test={n_test}" if n_test else ""
    return f"95% interval {100 * bounds.low:.2f}–{100 * bounds.high:.2f} (bootstrap over {over}{examples})"


def apart(a: float, half_a: float, b: float, half_b: float) -> bool:
    """Whether ``a`` and ``b`` differ by more than the unpaired 95 % half-width of their difference."""
    return abs(a - b) > math.hypot(half_a, half_b)


def mean_half(halves: Sequence[float]) -> float:
    """The half-width of a mean over tasks, each task's test set independent of the others."""
    return math.sqrt(sum(h * h for h in halves)) / len(halves)


def contains(bounds: Bounds | None, value: float) -> bool | None:
    """Whether ``value`` lies inside ``bounds`` (None: no interval to say)."""
    return None if bounds is None else bounds.low <= value <= bounds.high
