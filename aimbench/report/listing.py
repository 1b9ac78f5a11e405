"""Tables of what aimbench knows: backbone variants and tasks from the cards."""

from __future__ import annotations

import fnmatch

from aimbench.cards.registry import Registry
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


def task_listing(registry: Registry, pattern: str | None = None) -> Table:
    rows = []
    for spec in sorted(registry.tasks.values(), key=lambda s: s.name):
        if not _matches(spec.name, pattern):
            continue
        sizes = spec.expected_sizes
        rows.append(
            [
                spec.name, str(spec.num_classes), f"{sizes['train']}/{sizes['val']}/{sizes['test']}",
                spec.val.describe(), ", ".join(s.kind for s in spec.sources), ", ".join(spec.suites), spec.license,
            ]
        )  # fmt: skip
    columns = ["name", "classes", "train/val/test", "val", "sources", "suites", "licence"]
    return Table(f"{len(rows)} tasks", columns, rows)
