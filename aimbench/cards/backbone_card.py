"""Backbone cards: one TOML file per family, listing named variants.

A variant carries everything that changes its features: the architecture, where the weights
come from (and their checksum when published), the preprocessing the weights were trained with,
and the token layout. ``depth``/``dim``/``heads`` and the prefix-token layout are declared in the
card *and* checked against the built model, so a card cannot silently describe another network.
A weights file named by a relative path is read relative to the card and must stay inside the
card's directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from aimbench.cards.fields import Fields
from aimbench.confine import resolves_inside
from aimbench.dtypes import DTYPES
from aimbench.errors import CardError

ADAPTERS = ("timm", "aim", "open_clip")
# a backbone wrapped from a module in memory (aimbench.adapters.module_family): no card names it, and its
# spec's sha256 is its weights' content, which is therefore part of its cells' identity
IN_MEMORY = "module"
PATCH_MEAN, CLS = "patch_mean", "cls"  # how a probe pools a layer's tokens
CONCAT = f"{PATCH_MEAN}+{CLS}"  # a probe head reading both poolings, concatenated
TOKEN_KINDS = (PATCH_MEAN, CLS, CONCAT)  # what a probe head may read of a layer set


def column_kinds(pooled: Sequence[str], wanted: Sequence[str] | None = None) -> list[str]:
    """The token kinds a layer set's heads read: every pooling alone (in ``pooled`` order), then
    their concatenation where both are pooled, narrowed to ``wanted`` (a protocol's ``token_kinds``;
    None: all). A backbone lacking every wanted kind (DINOv2's cls-based recipe on AIM, which has no
    cls token) is read by its first pooling (the patch mean): a protocol names what it prefers, not what must exist."""
    available = [kind for kind in pooled if kind in (PATCH_MEAN, CLS)] + ([CONCAT] if PATCH_MEAN in pooled and CLS in pooled else [])
    if wanted is None:
        return available
    kept = [kind for kind in available if kind in wanted]
    return kept or available[:1]


INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
RESIZE_MODES = ("shortest", "squash")  # short side to resize_size, or both sides (aspect not kept)
NOT_FILES = ("random", "timm")  # weights values that name a way of building weights
REMOTE_PREFIXES = ("hf:", "https://", "http://", "open_clip:")  # weights fetched (or built) by the adapters


@dataclass(frozen=True, kw_only=True)
class Preprocess:
    """Eval-time transform: resize to ``resize_size`` (the short side, or both sides with
    ``resize_mode = "squash"``), then centre-crop ``image_size``. Keyword-only: two sizes and two
    triples side by side are easy to swap, and now cards and wrapped modules both build one."""

    image_size: int
    resize_size: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_mode: str = "shortest"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "crop": "center"}


@dataclass(frozen=True)
class OfficialProbe:
    """A released probe head: its file (or hub source), checksum, and the blocks it averages."""

    weights: str
    layers: tuple[int, ...]
    sha256: str | None = None


@dataclass(frozen=True, kw_only=True)
class BackboneSpec:
    """One named variant of a backbone card (or of a wrapped module, ``adapters.module_family``).

    Keyword-only: twenty fields, several of the same type (depth, dim, heads, registers), are
    built both from cards and in memory, and a positional call would swap them silently."""

    name: str
    family: str
    adapter: str
    arch: str
    weights: str  # random | timm (tag in arch) | open_clip:<tag> | hf:<owner>/<repo>/<file> | a file path
    depth: int
    dim: int
    heads: int
    cls_token: bool
    registers: int
    preprocess: Preprocess
    license: str
    description: str
    card_path: Path
    sha256: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    probe_tokens: tuple[str, ...] = (PATCH_MEAN,)  # token poolings probed, e.g. not an untrained cls
    official_probes: dict[str, OfficialProbe] = field(default_factory=dict)
    drop_keys: tuple[str, ...] = ()  # glob patterns of pre-training-only tensors in the weights file
    # glob patterns of tensors a weights file may hold at another shape, which the family's filter
    # resamples to the card's (DINOv2's 518-px position embeddings for a 224-px card); any other
    # reshaped tensor fails the load, since resampling changes what the network computes
    resample_keys: tuple[str, ...] = ()
    # resource hint: device memory (GB) an eval cell needs per dtype; launchers size jobs from it
    # (aimbench.launch.slurm.resources). It never changes a number, so it is not part of a cell's identity.
    memory_gb: dict[str, float] = field(default_factory=dict)
    # named layer windows a paper reports without releasing heads (``[variants.X.windows] last = [3, 4, 5]``)
    declared_windows: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def windows(self) -> dict[str, tuple[int, ...]]:
        """Named layer windows (``last``, ``best``): the blocks the card's released heads average, and
        the windows it declares for published numbers without released heads."""
        return {**self.declared_windows, **{name: probe.layers for name, probe in self.official_probes.items()}}

    @property
    def prefix_layout(self) -> tuple[str, ...]:
        """Names of the prefix tokens in model order (cls first, then registers)."""
        return ("cls",) * self.cls_token + ("register",) * self.registers


def _read_preprocess(fields: Fields) -> Preprocess:
    pre = Preprocess(
        image_size=fields.int("image_size", minimum=1),
        resize_size=fields.int("resize_size", minimum=1),
        interpolation=fields.str("interpolation", choices=INTERPOLATIONS),
        mean=fields.floats("mean", 3),
        std=fields.floats("std", 3),
        resize_mode=fields.str("resize_mode", default="shortest", choices=RESIZE_MODES),
    )
    if pre.resize_size < pre.image_size:
        raise fields.error("resize_size", f"must be >= image_size ({pre.image_size})")
    if min(pre.std) <= 0:
        raise fields.error("std", "every value must be positive")
    fields.reject_unknown()
    return pre


def weights_source(fields: Fields, key: str) -> str:
    """A weights source; a relative file path (read relative to the card) must resolve, ``..`` and
    links included, inside the card directory (the folder holding ``backbones/``).

    A card from elsewhere cannot make a run read files outside its own directory unless it says so
    with an absolute path, which is then visible in the card and in every record's card content.
    """
    value = fields.str(key)
    if value in NOT_FILES or value.startswith(REMOTE_PREFIXES) or Path(value).expanduser().is_absolute():
        return value
    root = fields.path.parent.parent
    if not resolves_inside(fields.path.parent / value, root):
        raise fields.error(key, f"the relative path {value!r} leads outside the card directory {root}; "
                                "give an absolute path for weights kept elsewhere")  # fmt: skip
    return value


def _block_list(fields: Fields, key: str, depth: int) -> tuple[int, ...]:
    blocks = fields.raw(key)
    if not isinstance(blocks, list) or not blocks or not all(isinstance(i, int) and 0 <= i < depth for i in blocks):
        raise fields.error(key, f"expected a non-empty list of block indices in 0..{depth - 1}, got {blocks!r}")
    return tuple(sorted(set(blocks)))


def _read_official_probes(fields: Fields, depth: int) -> dict[str, OfficialProbe]:
    probes = {}
    for name in fields.table:
        entry = fields.table_of(name)
        probes[name] = OfficialProbe(
            weights_source(entry, "weights"), _block_list(entry, "layers", depth), entry.str("sha256", default=None)
        )
        entry.reject_unknown()
    return probes


def _read_windows(fields: Fields, depth: int) -> dict[str, tuple[int, ...]]:
    """``[variants.X.windows]``: ``last`` and ``best`` as lists of blocks the paper's probe averages."""
    windows = {}
    for name in fields.table:
        if name not in ("last", "best"):
            raise fields.error(name, "a window is named last or best (what --layers and published numbers call them)")
        windows[name] = _block_list(fields, name, depth)
    return windows


def _read_resources(fields: Fields) -> dict[str, float]:
    """``[variants.X.resources]``: ``memory_gb = { fp32 = 34, bf16 = 18 }``, keyed by ``--dtype`` names."""
    memory = fields.table_of("memory_gb", default={})
    hints = {}
    for dtype in memory.table:
        if dtype not in DTYPES:
            raise memory.error(dtype, f"unknown dtype; expected one of {', '.join(DTYPES)}")
        hints[dtype] = memory.float(dtype)
        if hints[dtype] <= 0:
            raise memory.error(dtype, f"must be a positive number of GB, got {hints[dtype]}")
    fields.reject_unknown()
    return hints


def parse_backbone_card(data: dict[str, Any], path: Path) -> list[BackboneSpec]:
    """Validate a parsed backbone card and return its variants."""
    top = Fields(data, path)
    family = top.str("family")
    adapter = top.str("adapter", choices=ADAPTERS)
    license_ = top.str("license")
    top.str("description", default="")
    top.str("homepage", default="")
    family_pre = top.table_of("preprocess", default={}).table
    variants = top.table_of("variants")
    top.reject_unknown()
    if not variants.table:
        raise CardError(path, "variants", "a card must list at least one variant")
    specs = []
    for name in variants.table:
        v = variants.table_of(name)
        pre_table = {**family_pre, **v.table_of("preprocess", default={}).table}
        spec = BackboneSpec(
            name=name,
            family=family,
            adapter=adapter,
            arch=v.str("arch"),
            weights=weights_source(v, "weights"),
            depth=v.int("depth", minimum=1),
            dim=v.int("dim", minimum=1),
            heads=v.int("heads", minimum=1),
            cls_token=v.bool("cls_token"),
            registers=v.int("registers", default=0, minimum=0),
            preprocess=_read_preprocess(Fields(pre_table, path, v.name("preprocess"))),
            license=v.str("license", default=license_),
            description=v.str("description", default=""),
            card_path=path,
            sha256=v.str("sha256", default=None),
            model_args=dict(v.table_of("model_args", default={}).table),
            probe_tokens=v.strs("probe_tokens", default=None) or (),
            official_probes=_read_official_probes(v.table_of("official_probes", default={}), v.int("depth", minimum=1)),
            drop_keys=v.strs("drop_keys", default=None) or (),
            resample_keys=v.strs("resample_keys", default=None) or (),
            memory_gb=_read_resources(v.table_of("resources", default={})),
            declared_windows=_read_windows(v.table_of("windows", default={}), v.int("depth", minimum=1)),
        )
        default_tokens = (PATCH_MEAN, CLS) if spec.cls_token else (PATCH_MEAN,)
        spec = replace(spec, probe_tokens=spec.probe_tokens or default_tokens)
        unknown = set(spec.probe_tokens) - set(default_tokens)
        if unknown or len(set(spec.probe_tokens)) != len(spec.probe_tokens):
            raise v.error("probe_tokens", f"expected distinct values among {', '.join(default_tokens)}, got {list(spec.probe_tokens)}")
        if spec.dim % spec.heads:
            raise v.error("heads", f"dim {spec.dim} is not divisible by heads {spec.heads}")
        v.reject_unknown()
        specs.append(spec)
    return specs
