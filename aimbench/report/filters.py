"""Report filters (``--backbone``, ``--task``, ``--probe``, ``--suite``, ``--since``) as one SQL condition.

Backbone, task and probe filters take comma-separated names or shell-style patterns
(``--backbone 'aim-*,dinov2-vitg14'``), because records may name cards that this checkout does
not have. ``--suite`` (or a suite name or ``tag:NAME`` in ``--task``) resolves through the card
registry and also fixes the column order: the paper's order for ``aim15``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from aimbench.cards.registry import Registry
from aimbench.errors import UserError
from aimbench.names import split_names

_RELATIVE = re.compile(r"^(\d+)([dhm])$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


@dataclass(frozen=True)
class Filters:
    backbones: tuple[str, ...] = ()  # glob patterns; empty = all
    tasks: tuple[str, ...] = ()  # glob patterns; empty = all
    probes: tuple[str, ...] = ()  # glob patterns; empty = all
    since: datetime | None = None  # UTC, naive (as the views show created_at)
    task_order: tuple[str, ...] = ()  # the column order; tasks not named here follow alphabetically

    def where(self) -> tuple[str, dict[str, Any]]:
        """A SQL condition over a relation with backbone/task/probe/created_at columns, and its parameters."""
        parts = ["true"]
        params: dict[str, Any] = {}
        for column, patterns in (("backbone", self.backbones), ("task", self.tasks), ("probe", self.probes)):
            if patterns:
                names = [f"{column}{i}" for i in range(len(patterns))]
                parts.append("(" + " OR ".join(f"{column} GLOB ${name}" for name in names) + ")")
                params.update(zip(names, patterns))
        if self.since is not None:
            parts.append("created_at >= $since")
            params["since"] = self.since
        return " AND ".join(parts), params

    def order(self, tasks: set[str]) -> list[str]:
        known = [t for t in self.task_order if t in tasks]
        return known + sorted(tasks - set(known))


def _names(text: str | None) -> list[str]:
    return list(split_names(text or ""))


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """An ISO date or time (UTC unless it carries an offset), or an age such as ``7d``, ``12h``, ``30m``."""
    now = now or datetime.now(timezone.utc)
    relative = _RELATIVE.match(text.strip())
    if relative:
        try:
            moment = now - timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
        except OverflowError:  # more days than a date can go back (year 1)
            raise UserError(f"--since '{text}' reaches back before the year 1; give a smaller age or a date") from None
    else:
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            raise UserError(
                f"--since '{text}' is neither an ISO date/time (2026-11-01, 2026-11-01T12:00) nor an age (7d, 12h, 30m)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def build_filters(
    registry: Registry,
    backbone: str | None = None,
    task: str | None = None,
    probe: str | None = None,
    suite: str | None = None,
    since: str | None = None,
) -> Filters:
    """Resolve the CLI's filter options; suites and tags expand through ``registry``."""
    order = [spec.name for spec in registry.ordered_tasks()]
    tasks: list[str] = []
    for name in _names(task):
        if any(ch in name for ch in "*?["):
            tasks.append(name)
        elif name in registry.tasks or name in registry.suites() or name.startswith("tag:"):
            tasks += [spec.name for spec in registry.expand_tasks([name])]
        else:
            tasks.append(name)  # a task of a record whose card is not installed here
    if suite is not None:
        suites = registry.suites()
        if suite not in suites:
            raise UserError(f"unknown suite '{suite}'; known suites: {', '.join(sorted(suites))}")
        members = suites[suite]
        tasks = [t for t in members if not tasks or t in tasks]
        if not tasks:
            raise UserError(f"--task {task} and --suite {suite} have no task in common")
        order = members + [t for t in order if t not in members]
    return Filters(
        backbones=tuple(_names(backbone)),
        tasks=tuple(dict.fromkeys(tasks)),
        probes=tuple(_names(probe)),
        since=parse_since(since) if since else None,
        task_order=tuple(order),
    )
