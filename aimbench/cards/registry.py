"""Where cards are found and how names resolve.

Built-in cards ship inside the wheel (``aimbench/_cards``); in a source checkout they are read
from the repository's ``backbones/``, ``tasks/``, ``tasks/suites/`` and ``protocols/``. Users add
card directories (each holding any of ``backbones/``, ``tasks/`` and ``protocols/``) with
``--cards DIR`` or ``AIMBENCH_CARDS`` (path-separated); a user card may shadow a built-in name,
and the record keeps the card path either way.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aimbench.cards.backbone_card import BackboneSpec, parse_backbone_card
from aimbench.cards.protocol_card import ProtocolSpec, parse_protocol_card
from aimbench.cards.suite_card import SuiteSpec, parse_suite_card
from aimbench.cards.task_card import TaskSpec, parse_task_card
from aimbench.errors import CardError, UserError, unknown_name
from aimbench.special_files import require_regular

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

CARDS_ENV = "AIMBENCH_CARDS"
CARD_FOLDERS = ("backbones", "tasks", "protocols")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a backbone described in memory: it names record and cache files


def builtin_cards_root() -> Path:
    """The directory holding the shipped ``backbones/``, ``tasks/`` and ``protocols/`` folders."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / "_cards"
    return packaged if packaged.is_dir() else package.parent


def card_roots(extra: Iterable[Path] = ()) -> list[Path]:
    """Built-in root first, then ``AIMBENCH_CARDS`` entries, then explicit directories."""
    env = [Path(p) for p in os.environ.get(CARDS_ENV, "").split(os.pathsep) if p]
    roots = [builtin_cards_root()]
    for root in [*env, *extra]:
        if not root.is_dir():
            raise UserError(f"card directory '{root}' does not exist")
        if not any((root / folder).is_dir() for folder in CARD_FOLDERS):
            raise UserError(f"card directory '{root}' has none of the folders {', '.join(f + '/' for f in CARD_FOLDERS)}")
        roots.append(root)
    return roots


def read_toml(path: Path) -> dict:
    require_regular(path, "card")
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise CardError(path, "<toml>", f"not valid TOML ({exc})") from None
    except OSError as exc:
        raise CardError(path, "<file>", f"cannot be read ({exc.strerror})") from None


@dataclass
class Registry:
    """All known backbone variants, tasks, suites and protocols, by name."""

    backbones: dict[str, BackboneSpec]
    tasks: dict[str, TaskSpec]
    suite_specs: dict[str, SuiteSpec]
    protocols: dict[str, ProtocolSpec]

    @classmethod
    def load(cls, extra_dirs: Sequence[Path] = ()) -> Registry:
        backbones: dict[str, BackboneSpec] = {}
        tasks: dict[str, TaskSpec] = {}
        suites: dict[str, SuiteSpec] = {}
        protocols: dict[str, ProtocolSpec] = {}
        for root in card_roots(extra_dirs):
            seen: dict[str, Path] = {}
            for path in sorted((root / "backbones").glob("*.toml")):
                for spec in parse_backbone_card(read_toml(path), path):
                    if spec.name in seen:
                        raise CardError(path, f"variants.{spec.name}", f"also defined in {seen[spec.name]}")
                    seen[spec.name] = path
                    backbones[spec.name] = spec
            for path in sorted((root / "tasks").glob("*.toml")):
                task = parse_task_card(read_toml(path), path)
                tasks[task.name] = task
            for path in sorted((root / "tasks" / "suites").glob("*.toml")):
                suite = parse_suite_card(read_toml(path), path)
                suites[suite.name] = suite
            for path in sorted((root / "protocols").glob("*.toml")):
                protocol = parse_protocol_card(read_toml(path), path)
                protocols[protocol.name] = protocol
        registry = cls(backbones=backbones, tasks=tasks, suite_specs=suites, protocols=protocols)
        registry._check_suites()
        return registry

    def _check_suites(self) -> None:
        """Suite members must be known tasks; suite names and aliases must not hide a task."""
        for suite in self.suite_specs.values():
            for name in (suite.name, *suite.aliases):
                if name in self.tasks:
                    raise CardError(suite.card_path, "name", f"'{name}' is also a task name")
            for task in suite.tasks:
                if task not in self.tasks:
                    raise CardError(suite.card_path, "tasks", str(unknown_name("task", task, self.tasks)))

    def with_backbones(self, specs: Iterable[BackboneSpec]) -> Registry:
        """This registry plus backbones described in memory (a wrapped module's spec); a name a card
        already has is refused, so reports never mix the two."""
        added = {spec.name: spec for spec in specs}
        for name in added:
            if not _NAME.fullmatch(name):
                raise UserError(f"backbone name '{name}' must be letters, digits, '.', '_' or '-' (it names record files)")
            if name in self.backbones:
                raise UserError(
                    f"backbone name '{name}' is already a card's ({self.backbones[name].card_path}); give the model another name"
                )
        return dataclasses.replace(self, backbones={**self.backbones, **added})

    def backbone(self, name: str) -> BackboneSpec:
        if name not in self.backbones:
            raise unknown_name("backbone", name, self.backbones)
        return self.backbones[name]

    def protocol(self, name: str) -> ProtocolSpec:
        if name not in self.protocols:
            raise unknown_name("protocol", name, self.protocols)
        return self.protocols[name]

    def suites(self) -> dict[str, list[str]]:
        """Suite names and aliases -> member tasks, in the suite's order."""
        suites: dict[str, list[str]] = {}
        for suite in self.suite_specs.values():
            for name in (suite.name, *suite.aliases):
                suites[name] = list(suite.tasks)
        return suites

    def suites_of(self, task: str) -> list[str]:
        return [s.name for s in self.suite_specs.values() if task in s.tasks]

    def task(self, name: str) -> TaskSpec:
        if name not in self.tasks:
            raise unknown_name("task", name, [*self.tasks, *self.suites()])
        return self.tasks[name]

    def ordered_tasks(self) -> list[TaskSpec]:
        """Suite members in their suite's order (aim15 as in the paper), then the rest by name."""
        names = list(dict.fromkeys(t for suite in self.suite_specs.values() for t in suite.tasks))
        names += sorted(set(self.tasks) - set(names))
        return [self.tasks[name] for name in names]

    def tagged(self, tag: str) -> list[str]:
        """Tasks carrying ``tag`` (``--tasks tag:medical``), in :meth:`ordered_tasks` order."""
        members = [t.name for t in self.ordered_tasks() if tag in t.tags]
        if not members:
            known = sorted({t for task in self.tasks.values() for t in task.tags})
            raise UserError(f"unknown tag '{tag}'; known tags: {', '.join(known)}")
        return members

    def expand_tasks(self, names: Iterable[str]) -> list[TaskSpec]:
        """Resolve task names, suite names and ``tag:NAME``, in order, without duplicates."""
        suites = self.suites()
        out: dict[str, TaskSpec] = {}
        for name in names:
            if name in self.tasks:
                members = [name]
            elif name.startswith("tag:"):
                members = self.tagged(name.removeprefix("tag:"))
            else:
                members = suites.get(name, [name])
            for member in members:
                out.setdefault(member, self.task(member))
        return list(out.values())
