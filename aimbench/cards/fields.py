"""Typed field access on parsed TOML tables, with errors that name the file and the field.

Cards are data: they are parsed with ``tomllib`` and every value is checked here before it
reaches the rest of aimbench, so a typo in a card fails at load time, not deep inside a run.
"""

from __future__ import annotations

import builtins
import math
from pathlib import Path
from typing import Any

from aimbench.confine import escape_problem
from aimbench.errors import CardError

_MISSING = object()


def is_finite_number(value: Any) -> bool:
    """An int or float that is neither NaN nor inf (TOML writes both as ``nan`` and ``inf``): no card field means either."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


class Fields:
    """A view of one TOML table that reads typed values and reports bad ones precisely.

    ``prefix`` is the dotted path of the table inside the file, so nested errors read like
    ``variants.vit-tiny.depth``.
    """

    def __init__(self, table: dict[str, Any], path: Path, prefix: str = "") -> None:
        self.table = table
        self.path = path
        self.prefix = prefix
        self._read: set[str] = set()

    def name(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def error(self, key: str, problem: str) -> CardError:
        return CardError(self.path, self.name(key), problem)

    def _get(self, key: str, default: Any) -> Any:
        self._read.add(key)
        value = self.table.get(key, default)
        if value is _MISSING:
            raise self.error(key, "is required")
        return value

    def str(self, key: str, default: Any = _MISSING, choices: tuple[str, ...] = ()) -> Any:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str) or not value:
            raise self.error(key, f"expected a non-empty string, got {value!r}")
        if choices and value not in choices:
            raise self.error(key, f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def int(self, key: builtins.str, default: Any = _MISSING, minimum: builtins.int | None = None) -> Any:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.error(key, f"expected an integer >= {minimum}, got {value}")
        return value

    def float(self, key: builtins.str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        if not is_finite_number(value):
            raise self.error(key, f"expected a finite number, got {value!r}")
        return float(value)

    def bool(self, key: builtins.str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {value!r}")
        return value

    def floats(self, key: builtins.str, length: builtins.int, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, list) or len(value) != length or not all(is_finite_number(v) for v in value):
            raise self.error(key, f"expected a list of {length} numbers (finite), got {value!r}")
        return tuple(float(v) for v in value)

    def strs(self, key: builtins.str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(key, f"expected a list of strings, got {value!r}")
        return tuple(value)

    def relative_path(self, key: builtins.str, default: Any = _MISSING) -> Any:
        """A relative path that stays inside its root (the data root, a source's folder)."""
        value = self.str(key, default)
        if value is default and default is not _MISSING:
            return value
        problem = escape_problem(value)
        if problem is not None:
            raise self.error(key, problem)
        return value

    def table_of(self, key: builtins.str, default: Any = _MISSING) -> Fields:
        value = self._get(key, default)
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table, got {value!r}")
        return Fields(value, self.path, self.name(key))

    def raw(self, key: builtins.str, default: Any = _MISSING) -> Any:
        """Return a value as parsed (for free-form data such as model keyword arguments)."""
        return self._get(key, default)

    def reject_unknown(self) -> None:
        """Fail on keys this reader never asked for: they are almost always typos."""
        unknown = sorted(set(self.table) - self._read)
        if unknown:
            raise self.error(unknown[0], "unknown field (check the spelling against docs/cards.md)")
