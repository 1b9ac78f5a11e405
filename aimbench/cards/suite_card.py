"""Suite cards: a named, ordered list of tasks, one TOML file each under ``tasks/suites/``.

A suite fixes the order its tasks run and are reported in (``aim15`` follows the columns of the
AIM paper's Table 6), so it lives in its own file rather than being gathered from task cards,
whose file order is alphabetical. ``aliases`` give other names for the same suite (``all``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aimbench.cards.fields import Fields
from aimbench.errors import CardError


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    description: str
    aliases: tuple[str, ...]
    tasks: tuple[str, ...]
    citation: str
    card_path: Path


def parse_suite_card(data: dict[str, Any], path: Path) -> SuiteSpec:
    """Validate a parsed suite card; task names are resolved later, against the registry."""
    top = Fields(data, path)
    spec = SuiteSpec(
        name=top.str("name"),
        description=top.str("description", default=""),
        aliases=top.strs("aliases", default=()),
        tasks=top.strs("tasks"),
        citation=top.str("citation", default=""),
        card_path=path,
    )
    top.reject_unknown()
    if spec.name != path.stem:
        raise CardError(path, "name", f"must match the file name '{path.stem}', got '{spec.name}'")
    if len(set(spec.tasks)) != len(spec.tasks):
        repeated = sorted({t for t in spec.tasks if spec.tasks.count(t) > 1})
        raise CardError(path, "tasks", f"lists {', '.join(repeated)} more than once")
    return spec
