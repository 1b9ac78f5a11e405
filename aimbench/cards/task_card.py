"""Task cards: one TOML file per benchmark.

A task card says where the images come from (sources tried in order: a built-in loader, IDX
files, an image folder, list files, a WILDS release, COCO-style JSON annotations, or a Hugging
Face dataset pinned to a revision), how each source is fetched (archives with their published
checksums, or their exact sizes where none is published, or the manual step for gated data), how train/val/test are formed, how many images
each split must have, the class count and the metric. The val split is
either an official split or a stratified fraction of train carved with a fixed seed, so that it
is identical for every run seed and never overlaps test; a card that gives neither takes the
fraction from the protocol (and then states the size of the whole train split).

A task may override protocol fields for itself: ``[protocol.attentive] epochs = 50`` (any field
of a protocol's [attentive], [linear] or [knn] section, checked like the protocol card's own), and
``augmentation = "strong"`` for the training views of its linear and attentive probes.

Every path a card names stays inside its root, checked when the card loads: ``dir`` is relative to
the data root and the files a source names (list files, annotations, IDX prefixes, image
templates, hub ``data_files``) are relative to ``dir``, none of them absolute or climbing out with
``..``; ``tasks prepare`` writes only there (a card could otherwise unpack over any folder the user
can write). The exceptions are read-only: ``fallback_dirs`` are absolute system folders
(Debian's ``/usr/share/datasets/...``) and an ``hf`` source's ``id`` may be an absolute folder
holding a copy of the dataset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from aimbench.cards.fields import Fields
from aimbench.cards.protocol_card import AUGMENTATIONS, PROTOCOL_KINDS, check_field
from aimbench.confine import escape_problem
from aimbench.errors import CardError

SOURCE_KINDS = ("builtin", "idx", "imagefolder", "list", "wilds", "coco_json", "hf")
WILDS_DATASETS = ("iwildcam", "camelyon17", "rxrx1", "fmow")  # aimbench.data.wilds_source reads them
METRICS = ("top1", "mean_per_class", "macro_f1")  # aimbench.probes.metrics implements them
SPLITS = ("train", "val", "test")  # every task has these three, in this order
AUGMENTED = ("linear", "attentive")  # the probes a task's ``augmentation`` applies to


@dataclass(frozen=True)
class Download:
    """A file ``aimbench tasks prepare`` fetches into the source's folder, verified against what its
    publisher states: an MD5 or SHA-256, or, where no checksum is published (the WILDS archives),
    the exact size in bytes. A card names at least one of them, so that a truncated or replaced
    file is never taken for the right one. Archives (.tar, .tar.gz, .tgz, .zip) are unpacked with
    ``strip`` leading path components removed, other files are kept as they are."""

    url: str
    file: str  # local name; its suffix decides whether it is unpacked
    md5: str | None
    sha256: str | None
    strip: int
    size: int | None = None  # bytes


@dataclass(frozen=True)
class SourceSpec:
    """One way of obtaining the dataset; ``options`` are the kind-specific fields.

    ``split_names`` maps the split names used in ``[splits]`` to this source's own names, so
    sources that call the same split differently (``test`` vs ``validation``) can both serve.
    """

    kind: str
    options: dict[str, Any]
    split_names: dict[str, str]
    downloads: tuple[Download, ...]
    hint: str | None  # another way to provide the data (a manual step), shown when it is missing

    def source_split(self, name: str) -> str:
        return self.split_names.get(name, name)


@dataclass(frozen=True)
class ValPolicy:
    """Either an official split (``split``), a seeded stratified ``fraction`` of train, or (neither)
    the protocol's fraction of train."""

    split: str | None = None
    fraction: float | None = None
    seed: int = 0

    def describe(self, protocol_fraction: float | None = None) -> str:
        if self.split is not None:
            return f"official split '{self.split}'"
        if self.fraction is None and protocol_fraction is None:
            return f"stratified protocol's val_fraction of train, seed {self.seed}"
        fraction = self.fraction if self.fraction is not None else protocol_fraction
        return f"stratified {fraction:g} of train, seed {self.seed}" + (" (the protocol's val_fraction)" if self.fraction is None else "")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    version: int
    description: str
    num_classes: int
    metric: str
    secondary_metrics: tuple[str, ...]
    protocol: dict[str, dict[str, Any]]  # probe kind -> protocol field -> this task's value
    tags: tuple[str, ...]
    license: str
    citation: str
    homepage: str
    sources: tuple[SourceSpec, ...]
    train_split: str
    test_split: str
    val: ValPolicy
    expected_sizes: dict[str, int]  # train (before carving when val comes from the protocol), val unless so, test
    card_path: Path

    def split_policy(self, protocol_fraction: float | None = None) -> dict[str, Any]:
        """The split definition as recorded with every result."""
        policy: dict[str, Any] = {"train": self.train_split, "test": self.test_split, "val": self.val.describe(protocol_fraction)}
        accepted = [f"{s.options[SHARED_TEST]} in its {s.kind} copy" for s in self.sources if SHARED_TEST in s.options]
        if accepted:  # only where a card accepts copies, so every other record keeps its fields
            policy[SHARED_TEST] = "test images byte-identical to train or val accepted: up to " + ", ".join(accepted)
        return policy


# Any source: how many test images of this copy hold the same bytes as a train or val image, for a
# benchmark published so (aimbench.data.overlap refuses more; more than none without it).
SHARED_TEST = "shared_test_images"

_SOURCE_FIELDS: dict[str, dict[str, tuple[str, bool]]] = {
    # kind -> field -> (type, required); "table" is a table of strings, "relative_path" a path that
    # stays inside its root (``dir`` under the data root, the others under ``dir``), "paths" a table
    # of them, "folders" absolute system folders that are only ever read
    "builtin": {"loader": ("str", True)},
    "idx": {"dir": ("relative_path", True), "fallback_dirs": ("folders", False), "prefixes": ("paths", True)},
    # <dir>/<split>/<class>/<image>; classes are the sorted folder names of all splits
    "imagefolder": {"dir": ("relative_path", True)},
    # one text file per split, a line per image: ``image`` is a template over the line's
    # whitespace-separated fields ({0}, {1}, ...); the label is field ``label_field`` (minus
    # ``label_base``) or, without it, the first folder of field 0 indexed in ``classes_file``
    # (or in the sorted folder names)
    "list": {
        "dir": ("relative_path", True),
        "lists": ("paths", True),
        "image": ("template", True),
        "label_field": ("int", False),
        "label_base": ("int", False),
        "classes_file": ("relative_path", False),
    },
    "wilds": {"dir": ("relative_path", True), "dataset": ("str", True)},
    # COCO-style JSON (images, annotations, categories), e.g. iNaturalist; labels index the
    # sorted category ids; image paths are relative to ``dir``
    "coco_json": {"dir": ("relative_path", True), "annotations": ("paths", True)},
    "hf": {
        "id": ("hub_id", True),
        "revision": ("str", True),
        "image_column": ("str", True),
        "label_column": ("str", True),
        "config": ("str", False),
        # split -> glob of the repository's files to read (and fetch), for repos holding more than the dataset
        "data_files": ("paths", False),
    },
}
# A hub dataset id (``owner/name``, the hub's own alphabet) or an absolute folder holding a copy:
# the id names the folder ``tasks prepare`` writes under ``<data-root>/hf/``, so it cannot climb out.
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")
_TEMPLATE_FIELD = re.compile(r"\{[^{}]*\}")
_CHECKSUM_LENGTHS = {"md5": 32, "sha256": 64}


def _read_download(fields: Fields) -> Download:
    url = fields.str("url")
    if not url.startswith(("https://", "http://")):
        raise fields.error("url", f"expected an http(s) URL, got {url!r}")
    checksums = {}
    for key, length in _CHECKSUM_LENGTHS.items():
        value = fields.str(key, default=None)
        if value is not None and (len(value) != length or any(c not in "0123456789abcdef" for c in value)):
            raise fields.error(key, f"expected {length} lower-case hex digits, got {value!r}")
        checksums[key] = value
    default_file = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    download = Download(url, fields.str("file", default=default_file), checksums["md5"], checksums["sha256"],
                        fields.int("strip", default=0, minimum=0), fields.int("size", default=None, minimum=1))  # fmt: skip
    if "/" in download.file or download.file in ("", ".", ".."):
        raise fields.error("file", f"expected a plain file name, got {download.file!r}")
    if download.md5 is None and download.sha256 is None and download.size is None:
        raise fields.error("md5", "give the file's published md5 or sha256, or its exact size in bytes ('size') where no checksum "
                                  "is published: without one a truncated or replaced download cannot be told from the right file")  # fmt: skip
    fields.reject_unknown()
    return download


def _folders(fields: Fields, key: str) -> tuple[str, ...] | None:
    """Absolute folders read as they are (Debian's ``/usr/share/datasets/...``); never written."""
    folders = fields.strs(key, default=None)
    for folder in folders or ():
        if not PurePosixPath(folder).is_absolute():
            raise fields.error(key, f"expected absolute system folders (e.g. /usr/share/datasets/...), got {folder!r}; "
                                    "data under the data root goes in 'dir'")  # fmt: skip
    return folders


def _hub_id(fields: Fields, key: str) -> str:
    value = fields.str(key)
    if not PurePosixPath(value).is_absolute() and (not _HUB_ID.fullmatch(value) or ".." in value):
        raise fields.error(key, f"expected a hub dataset id 'owner/name' or an absolute folder, got {value!r}")
    return value


def _template(fields: Fields, key: str) -> str:
    """An image path template: with its fields filled in, it must stay inside the source's folder."""
    value = fields.str(key)
    if escape_problem(_TEMPLATE_FIELD.sub("x", value)) is not None:
        raise fields.error(key, f"must name images inside 'dir' (relative, no '..' leading out), got {value!r}")
    return value


_SPECIAL_READERS = {"folders": _folders, "hub_id": _hub_id, "template": _template}


def _read_option(fields: Fields, key: str, kind_of: str, required: bool) -> Any:
    if kind_of in ("table", "paths"):
        value = fields.table_of(key) if required else fields.table_of(key, default={})
        return {k: value.relative_path(k) if kind_of == "paths" else value.str(k) for k in value.table}
    if kind_of in _SPECIAL_READERS:
        return _SPECIAL_READERS[kind_of](fields, key)
    reader = getattr(fields, kind_of)
    return reader(key) if required else reader(key, default=None)


def _read_source(fields: Fields) -> SourceSpec:
    kind = fields.str("kind", choices=SOURCE_KINDS)
    options = {key: _read_option(fields, key, kind_of, required) for key, (kind_of, required) in _SOURCE_FIELDS[kind].items()}
    if SHARED_TEST in fields.table:  # an option only where given: a card without it keeps its cells' identity
        options[SHARED_TEST] = fields.int(SHARED_TEST, minimum=1)
    if kind == "wilds" and options["dataset"] not in WILDS_DATASETS:
        raise fields.error("dataset", f"expected one of {', '.join(WILDS_DATASETS)}, got {options['dataset']!r}")
    names = fields.table_of("split_names", default={})
    raw_downloads = fields.raw("downloads", default=[])
    if not isinstance(raw_downloads, list) or not all(isinstance(d, dict) for d in raw_downloads):
        raise fields.error("downloads", "expected an array of tables ([[sources.downloads]])")
    downloads = tuple(_read_download(Fields(d, fields.path, fields.name(f"downloads[{i}]"))) for i, d in enumerate(raw_downloads))
    spec = SourceSpec(
        kind=kind,
        options=options,
        split_names={k: names.str(k) for k in names.table},
        downloads=downloads,
        hint=fields.str("hint", default=None),
    )
    fields.reject_unknown()
    return spec


def _read_val(fields: Fields) -> ValPolicy:
    split = fields.str("split", default=None)
    fraction = fields.float("fraction", default=None)
    seed = fields.int("seed", default=0, minimum=0)
    fields.reject_unknown()
    if split is not None and fraction is not None:
        raise fields.error("split", "give one of 'split' (official) or 'fraction', or neither (the protocol's val_fraction)")
    if fraction is not None and not 0.0 < fraction < 1.0:
        raise fields.error("fraction", f"must be between 0 and 1, got {fraction}")
    return ValPolicy(split=split, fraction=fraction, seed=seed)


def _read_protocol(top: Fields, augmentation: str | None) -> dict[str, dict[str, Any]]:
    """The task's overrides of protocol fields, per probe kind; ``augmentation`` applies to every augmented probe."""
    table = top.table_of("protocol", default={})
    overrides: dict[str, dict[str, Any]] = {}
    for kind in table.table:
        if kind not in PROTOCOL_KINDS:
            raise table.error(kind, f"expected a probe among {', '.join(PROTOCOL_KINDS)} (a task's val fraction is splits.val.fraction)")
        section = table.table_of(kind)
        overrides[kind] = {name: check_field(kind, name, section.raw(name), section) for name in section.table}
    if augmentation is not None:
        for kind in AUGMENTED:
            if "augmentation" in overrides.get(kind, {}):
                raise top.error("augmentation", f"also set in [protocol.{kind}]; give it once")
            overrides.setdefault(kind, {})["augmentation"] = augmentation
    return overrides


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
    carved_by_protocol = val.split is None and val.fraction is None  # val's size depends on the protocol: not stated
    sizes = {key: expected.int(key, minimum=1) for key in (("train", "test") if carved_by_protocol else SPLITS)}
    expected.reject_unknown()
    secondary = top.strs("secondary_metrics", default=())
    for metric in secondary:
        if metric not in METRICS:
            raise top.error("secondary_metrics", f"expected metrics among {', '.join(METRICS)}, got {metric!r}")
    spec = TaskSpec(
        name=top.str("name"),
        version=top.int("version", minimum=1),
        description=top.str("description", default=""),
        num_classes=top.int("num_classes", minimum=2),
        metric=top.str("metric", choices=METRICS),
        secondary_metrics=secondary,
        protocol=_read_protocol(top, top.str("augmentation", default=None, choices=AUGMENTATIONS)),
        tags=top.strs("tags", default=()),
        license=top.str("license"),
        citation=top.str("citation", default=""),
        homepage=top.str("homepage", default=""),
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
