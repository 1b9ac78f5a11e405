"""Task cards: one TOML file per benchmark.

A task card says where the images come from (sources tried in order: a built-in loader, IDX
files, an image folder, or a Hugging Face dataset pinned to a revision), how train/val/test are
formed, how many images each split must have, the class count and the metric. The val split is
either an official split or a stratified fraction of train carved with a fixed seed, so that it
is identical for every run seed and never overlaps test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aimbench.cards.fields import Fields
from aimbench.errors import CardError

SOURCE_KINDS = ("builtin", "idx", "imagefolder", "hf")
METRICS = ("top1", "mean_per_class", "macro_f1")  # aimbench.probes.metrics implements them
# training views of online probes (aimbench.probes.attentive_training): RandomResizedCrop + flip,
# that plus RandAugment and random erasing, or the eval crop only
AUGMENTATIONS = ("rrc_flip", "strong", "none")


@dataclass(frozen=True)
class SourceSpec:
    """One way of obtaining the dataset; ``options`` are the kind-specific fields."""

    kind: str
    options: dict[str, Any]


@dataclass(frozen=True)
class ValPolicy:
    """Either an official split (``split``) or a seeded stratified ``fraction`` of train."""

    split: str | None = None
    fraction: float | None = None
    seed: int = 0

    def describe(self) -> str:
        if self.split is not None:
            return f"official split '{self.split}'"
        return f"stratified {self.fraction:g} of train, seed {self.seed}"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    version: int
    description: str
    num_classes: int
    metric: str
    augmentation: str
    tags: tuple[str, ...]
    suites: tuple[str, ...]
    license: str
    citation: str
    sources: tuple[SourceSpec, ...]
    train_split: str
    test_split: str
    val: ValPolicy
    expected_sizes: dict[str, int]
    card_path: Path

    def split_policy(self) -> dict[str, Any]:
        """The split definition as recorded with every result."""
        return {
            "train": self.train_split,
            "test": self.test_split,
            "val": self.val.describe(),
        }


_SOURCE_FIELDS: dict[str, dict[str, tuple[str, bool]]] = {
    # kind -> field -> (type, required)
    "builtin": {"loader": ("str", True)},
    "idx": {"dir": ("str", True), "fallback_dirs": ("strs", False), "prefixes": ("table", True)},
    "imagefolder": {"dir": ("str", True)},
    "hf": {
        "id": ("str", True),
        "revision": ("str", True),
        "image_column": ("str", True),
        "label_column": ("str", True),
        "config": ("str", False),
    },
}


def _read_source(fields: Fields) -> SourceSpec:
    kind = fields.str("kind", choices=SOURCE_KINDS)
    options: dict[str, Any] = {}
    for key, (kind_of, required) in _SOURCE_FIELDS[kind].items():
        if kind_of == "table":
            value = fields.table_of(key) if required else fields.table_of(key, default={})
            options[key] = {k: value.str(k) for k in value.table}
        else:
            reader = getattr(fields, kind_of)
            options[key] = reader(key) if required else reader(key, default=None)
    options["hint"] = fields.str("hint", default=None)  # another way to provide the data, shown when missing
    fields.reject_unknown()
    return SourceSpec(kind=kind, options=options)


def _read_val(fields: Fields) -> ValPolicy:
    split = fields.str("split", default=None)
    fraction = fields.float("fraction", default=None)
    seed = fields.int("seed", default=0, minimum=0)
    fields.reject_unknown()
    if (split is None) == (fraction is None):
        raise fields.error("split", "give exactly one of 'split' (official) or 'fraction'")
    if fraction is not None and not 0.0 < fraction < 1.0:
        raise fields.error("fraction", f"must be between 0 and 1, got {fraction}")
    return ValPolicy(split=split, fraction=fraction, seed=seed)


def parse_task_card(data: dict[str, Any], path: Path) -> TaskSpec:
    """Validate a parsed task card."""
    top = Fields(data, path)
    raw_sources = top.raw("sources")
    if not isinstance(raw_sources, list) or not raw_sources:
        raise CardError(path, "sources", "expected a non-empty array of tables ([[sources]])")
    sources = []
    for i, raw in enumerate(raw_sources):
        if not isinstance(raw, dict):
            raise CardError(path, f"sources[{i}]", "expected a table")
        sources.append(_read_source(Fields(raw, path, f"sources[{i}]")))
    splits = top.table_of("splits")
    train_split = splits.str("train")
    test_split = splits.str("test")
    val = _read_val(splits.table_of("val"))
    splits.reject_unknown()
    expected = top.table_of("expected_sizes")
    sizes = {key: expected.int(key, minimum=1) for key in ("train", "val", "test")}
    expected.reject_unknown()
    spec = TaskSpec(
        name=top.str("name"),
        version=top.int("version", minimum=1),
        description=top.str("description", default=""),
        num_classes=top.int("num_classes", minimum=2),
        metric=top.str("metric", choices=METRICS),
        augmentation=top.str("augmentation", default="rrc_flip", choices=AUGMENTATIONS),
        tags=top.strs("tags", default=()),
        suites=top.strs("suites", default=()),
        license=top.str("license"),
        citation=top.str("citation", default=""),
        sources=tuple(sources),
        train_split=train_split,
        test_split=test_split,
        val=val,
        expected_sizes=sizes,
        card_path=path,
    )
    top.reject_unknown()
    if spec.name != path.stem:
        raise CardError(path, "name", f"must match the file name '{path.stem}', got '{spec.name}'")
    return spec
