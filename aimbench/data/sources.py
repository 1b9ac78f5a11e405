"""Obtaining a task's raw splits from the first of its card's sources that is present.

Each source kind has a reader (``locate`` cheaply, ``load`` the listings); a card's sources are
tried in order and, if none is present, the error gives every way of providing the data at once:
``aimbench tasks prepare`` for sources it can fetch, the card's manual step for gated ones.
Every loaded source carries a revision (a pinned hub revision, a content hash, or a listing
hash) that is recorded with the results.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aimbench.cards.task_card import SHARED_TEST, SourceSpec, TaskSpec
from aimbench.data.array_sources import BUILTIN, IDX
from aimbench.data.folder_sources import IMAGEFOLDER, LIST
from aimbench.data.hf_source import HF
from aimbench.data.json_source import COCO_JSON
from aimbench.data.source_base import LoadedSource, SourceReader, SourceUnavailable
from aimbench.data.wilds_source import WILDS
from aimbench.errors import UserError

READERS: dict[str, SourceReader] = {
    "builtin": BUILTIN,
    "idx": IDX,
    "imagefolder": IMAGEFOLDER,
    "list": LIST,
    "wilds": WILDS,
    "coco_json": COCO_JSON,
    "hf": HF,
}


class TaskNotReady(UserError):
    """No source of a task is present; the message lists every way to provide one."""


@dataclass(frozen=True)
class LocatedSource:
    spec: SourceSpec
    where: str


def ways_to_provide(task: TaskSpec, source: SourceSpec, missing: str) -> list[str]:
    """What a user can do about one missing source, most direct first."""
    ways = [missing]
    if source.downloads or source.kind == "hf":
        ways.append(f"run 'aimbench tasks prepare {task.name}' with network access (HF_HUB_OFFLINE and HF_DATASETS_OFFLINE unset)")
    if source.hint:
        ways.append(source.hint)
    return ways


def locate_source(task: TaskSpec, data_root: Path) -> LocatedSource:
    """The first present source, without reading it; :class:`TaskNotReady` if there is none."""
    ways = []
    for source in task.sources:
        try:
            return LocatedSource(source, READERS[source.kind].locate(source, data_root))
        except SourceUnavailable as exc:
            ways.append(", ".join(ways_to_provide(task, source, str(exc))))
    raise TaskNotReady(f"task '{task.name}' has no local copy; provide it by one of: " + "; or ".join(ways))


def load_source(task: TaskSpec, data_root: Path) -> LoadedSource:
    """Load the first present source, with its splits under the card's split names."""
    located = locate_source(task, data_root)
    try:
        loaded = READERS[located.spec.kind].load(located.spec, data_root)
    except SourceUnavailable as exc:
        raise TaskNotReady(f"task '{task.name}': " + ", ".join(ways_to_provide(task, located.spec, str(exc)))) from None
    card_name = {source: card for card, source in located.spec.split_names.items()}
    splits = {card_name.get(name, name): images for name, images in loaded.splits.items()}
    return LoadedSource(splits, loaded.source, loaded.revision, located.spec.options.get(SHARED_TEST, 0))
