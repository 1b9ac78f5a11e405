"""Tables of what aimbench knows: backbone variants, tasks and protocols from the cards."""

from __future__ import annotations

import fnmatch
from pathlib import Path

from aimbench.cards.registry import Registry
from aimbench.cards.task_card import SourceSpec, TaskSpec
from aimbench.identity import DEFAULT_PROTOCOLS
from aimbench.report.tables import Table


def _matches(name: str, pattern: str | None) -> bool:
    if not pattern:
        return True
    return fnmatch.fnmatch(name, pattern) if any(c in pattern for c in "*?[") else pattern in name


def short_weights(source: str) -> str:
    """URLs shown as host/…/file: the file name is what tells variants apart in a narrow table."""
    if "://" not in source:
        return source
    host, _, path = source.split("://", 1)[1].split("?", 1)[0].partition("/")
    name = path.rsplit("/", 1)[-1]
    return f"{host}/…/{name}" if "/" in path else f"{host}/{name}"


def backbone_listing(registry: Registry, pattern: str | None = None) -> Table:
    rows = []
    for spec in sorted(registry.backbones.values(), key=lambda s: (s.family, s.name)):
        if not _matches(spec.name, pattern):
            continue
        tokens = ", ".join(f"{n} {k}" for k, n in (("cls", int(spec.cls_token)), ("reg", spec.registers)) if n) or "patches only"
        rows.append(
            [
                spec.name, spec.family, spec.arch, short_weights(spec.weights),
                f"{spec.depth}/{spec.dim}/{spec.heads}", tokens, str(spec.preprocess.image_size), spec.license,
            ]
        )  # fmt: skip
    columns = ["name", "family", "arch", "weights", "depth/dim/heads", "prefix tokens", "px", "licence"]
    return Table(f"{len(rows)} backbone variants", columns, rows)


def source_label(source: SourceSpec) -> str:
    """``hf:owner/name``, ``wilds:dir``, ...: enough to tell where a task's data comes from."""
    detail = source.options.get("id") or source.options.get("dir") or source.options.get("loader") or ""
    return f"{source.kind}:{detail}"


def sizes_label(sizes: dict[str, int]) -> str:
    """train/val/test sizes; a val carved by the protocol's fraction is still inside train."""
    if "val" not in sizes:
        return f"{sizes['train']} incl. val/{sizes['test']}"
    return f"{sizes['train']}/{sizes['val']}/{sizes['test']}"


def split_label(spec: TaskSpec) -> str:
    if spec.val.split:
        val = f"val={spec.val.split}"
    else:
        val = f"val={'protocol' if spec.val.fraction is None else format(spec.val.fraction, 'g')}×{spec.train_split}"
    return f"train={spec.train_split} {val} test={spec.test_split}"


def task_listing(registry: Registry, pattern: str | None = None, data_root: Path | None = None) -> Table:
    """The tasks with sources, splits, sizes, metric and, given a data root, whether each is ready."""
    rows = []
    for spec in registry.ordered_tasks():
        if not _matches(spec.name, pattern):
            continue
        metric = " + ".join((spec.metric, *spec.secondary_metrics))
        row = [
            spec.name, str(spec.num_classes), sizes_label(spec.expected_sizes), split_label(spec),
            " | ".join(source_label(s) for s in spec.sources), metric, ", ".join(registry.suites_of(spec.name)),
        ]  # fmt: skip
        if data_root is not None:
            from aimbench.data.sources import TaskNotReady, locate_source  # imports torch: only when asked

            try:
                row.append(f"ready ({locate_source(spec, data_root).spec.kind})")
            except TaskNotReady:
                row.append("missing")
        rows.append(row)
    columns = ["name", "classes", "train/val/test", "splits", "sources (in order)", "metric", "suites"]
    notes = [] if data_root is None else [f"data root: {data_root}; 'aimbench tasks check' verifies a copy in full"]
    return Table(f"{len(rows)} tasks", columns + (["data"] if data_root is not None else []), rows, notes)


def _default_for(protocol: str) -> str:
    kinds = [kind for kind, name in DEFAULT_PROTOCOLS.items() if name == protocol]
    return f" (default: {', '.join(kinds)})" if kinds else ""


def protocol_listing(registry: Registry, pattern: str | None = None) -> Table:
    """The protocols (probe recipes) with the probes each defines; each probe kind's default is marked."""
    rows = [
        [spec.name + _default_for(spec.name), ", ".join(spec.kinds), spec.description, str(spec.card_path)]
        for spec in sorted(registry.protocols.values(), key=lambda s: s.name)
        if _matches(spec.name, pattern)
    ]
    notes = ["--protocol NAME picks one for 'aimbench eval'; each field's value and source are in its card"]
    return Table(f"{len(rows)} protocols", ["name", "probes", "description", "card"], rows, notes)
