"""User-facing errors.

Anything a user can fix (a misspelt name, a malformed card, missing data or weights) raises
:class:`UserError`. The CLI turns it into one line on stderr and exit code 2; library callers
get a normal exception with the same message. Bugs stay ordinary exceptions with tracebacks.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class UserError(Exception):
    """An error caused by the user's input, reported as one line without a traceback."""

    exit_code = 2


class CardError(UserError):
    """A card file that does not validate; the message names the file and the field."""

    def __init__(self, path: object, field: str, problem: str) -> None:
        self.path = str(path)
        self.field = field
        super().__init__(f"{self.path}: field '{field}': {problem}")


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UserError:
    """Build the error for an unknown name, listing the closest known names."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    if close:
        hint = "did you mean: " + ", ".join(close) + "?"
    else:
        hint = f"see 'aimbench ls {kind}s' ({len(known)} known)"
    return UserError(f"unknown {kind} '{name}'; {hint}")


def at_least(option: str, value: int | float, minimum: int | float) -> None:
    """Refuse a numeric option below its range (``--batch-size 0``) before it reaches a loop that divides by it,
    and NaN or inf, which no range holds."""
    if not minimum <= value < float("inf"):  # also refuses NaN
        raise UserError(f"{option} must be at least {minimum}, got {value}")


def positive(option: str, value: float) -> None:
    """Refuse a rate or size that must be a finite number above zero (``--lr -1``, ``--lr nan``, ``--lr inf``)."""
    if not 0 < value < float("inf"):
        raise UserError(f"{option} must be a positive number, got {value}")


def one_line_worker_errors(batches: Iterable[T]) -> Iterator[T]:
    """``batches`` (a DataLoader's), with a :class:`UserError` raised in a worker process coming out
    as the worker's one line, not as torch's re-raise with the worker's traceback in its message."""
    try:
        yield from batches
    except UserError as exc:
        text = str(exc)
        if text.startswith("Caught UserError"):  # "Caught UserError in DataLoader worker process 0.\nOriginal Traceback ..."
            text = text.rstrip().rsplit("UserError: ", 1)[-1]
        raise UserError(text) from None
