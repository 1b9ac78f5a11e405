"""Protocol cards: a probe recipe as data, one TOML file per protocol under ``protocols/``.

A protocol says how every trained probe is trained and selected: the lr and weight-decay grid,
epochs, batch, warmup, augmentation, gradient clipping, which parameters are not decayed, the kNN
ks and temperature, and the val fraction of train for tasks without an official val split. Each
field is written as ``name = { value = ..., source = "..." }``: a number without the place it
comes from (an official code file, a paper section, or "aimbench default: not published") cannot
be checked, so a missing source is as much an error as a missing value. A section ([attentive],
[linear], [knn]) may be left out (that protocol does not define that probe), but a section that is
present lists every field: the card, not a code default, is the recipe.

A recipe that differs between datasets (AIMv2's attentive probe: batch 1024 and 5 warmup epochs on
ImageNet, batch 512 and none elsewhere) says so in the same card: ``[attentive.tasks.imagenet-1k]``
lists the fields that differ for that task, each again ``{ value, source }``. Resolution reads them
after the section's values and before the task card's own overrides
(:func:`aimbench.probes.protocol.resolve_config`).

The field rules live here once and serve both protocol cards and the ``[protocol.<kind>]``
overrides of task cards, so an override is checked exactly like the card it overrides.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aimbench.cards.backbone_card import TOKEN_KINDS
from aimbench.cards.fields import Fields, is_finite_number
from aimbench.errors import CardError

SPLITS = "splits"  # the section that holds val_fraction, shared by every kind
DATA_MODES = ("online", "cached")  # augmented views through the backbone each step, or eval-crop features cached once
# training views of online probes (aimbench.probes.features.views): RandomResizedCrop + flip, that plus
# RandAugment and random erasing, or the eval crop only
AUGMENTATIONS = ("rrc_flip", "strong", "none")
GRID_SEARCHES = ("halving", "full")  # linear heads: successive halving on val (aimbench.probes.linear.halving), or every head to the end
HEAD_PRECISIONS = ("bf16", "fp32")  # linear heads' training products: bf16 over fp32 weights, or fp32 throughout
OPTIMIZERS = ("adamw", "sgd")  # linear heads: AdamW (aim-v1), or SGD with momentum (DINOv2's linear protocol)
FEATURE_NORMS = ("batchnorm", "none")  # linear heads' inputs: standardised with train statistics, or as extracted
BLOCK_NORMS = ("raw", "final")  # pooled block outputs as the blocks give them, or through the backbone's final norm first (DINOv2)
# the crop's resampling: the backbone card's [preprocess] interpolation, or one named
INTERPOLATIONS = ("backbone", "bicubic", "bilinear", "nearest")
# RandAugment as "<library>:<policy>", the policy in timm's grammar (rand-m9-mstd0.5-inc1): which
# library's RandAugment runs, and the options of the grammar that library's transform takes
RAND_AUGMENT_OPTIONS = {"torchvision": ("m", "n"), "timm": ("m", "n", "p", "mstd", "mmax", "inc")}
FRACTIONAL_OPTIONS = ("p", "mstd")  # the others take whole numbers
TASKS = "tasks"  # a section's per-task values: [<kind>.tasks.<task name>]
# parameter names a probe's no_weight_decay may list (Apple's head.* names for the attentive head)
PARAMETERS = {
    "attentive": ("cls_token", "k.weight", "v.weight", "linear.weight", "linear.bias"),
    "linear": ("weight", "bias"),
}

Check = Callable[[Any], Any]  # a raw TOML value -> the typed value, or ValueError(problem)


def _number(value: Any) -> float:
    """A finite number: NaN passes every comparison a range check makes, so it is refused here, once."""
    if not is_finite_number(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return float(value)


def _integer(minimum: int) -> Check:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"expected an integer >= {minimum}, got {value!r}")
        return value

    return check


def _between(low: float, high: float, low_open: bool, high_open: bool) -> Check:
    def check(value: Any) -> float:
        number = _number(value)
        if number < low or number > high or (low_open and number == low) or (high_open and number == high):
            raise ValueError(f"expected a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}, got {value!r}")
        return number

    return check


def _list_of(item: Check) -> Check:
    def check(value: Any) -> tuple:
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError(f"expected a non-empty list, got {value!r}")
        items = tuple(item(v) for v in value)
        if len(set(items)) != len(items):  # name the value, not the list: a grid may hold 200,000 points
            counts = Counter(items)
            repeated = next(v for v in items if counts[v] > 1)
            raise ValueError(f"lists {repeated!r} more than once ({len(items):,} values)")
        return items

    return check


def _choice(choices: tuple[str, ...]) -> Check:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    return check


def _positive_or_false(what: str) -> Check:
    """A positive number, or ``false`` for none (TOML has no null)."""

    def check(value: Any) -> float | None:
        if value is False:
            return None
        number = _number(value)
        if number <= 0:
            raise ValueError(f"expected a positive {what} or false, got {value!r}")
        return number

    return check


_clip = _positive_or_false("max norm")


def _pair(item: Check, ordered: bool) -> Check:
    """Two values (``ordered``: the first not above the second), as a tuple."""

    def check(value: Any) -> tuple:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValueError(f"expected a list of two numbers, got {value!r}")
        pair = (item(value[0]), item(value[1]))
        if ordered and pair[0] > pair[1]:
            raise ValueError(f"expected [low, high], got {value!r}")
        return pair

    return check


def rand_augment_policy(value: Any) -> tuple[str, dict[str, str]]:
    """``"torchvision:rand-m9-n2"`` -> ("torchvision", {"m": "9", "n": "2"}); ValueError when the
    library is unknown or the policy uses an option that library's RandAugment does not take."""
    library, _, policy = value.partition(":") if isinstance(value, str) else ("", "", "")
    known = RAND_AUGMENT_OPTIONS.get(library, ())
    parts = policy.split("-")
    options = [re.fullmatch(r"([a-z]+)(\d+(?:\.\d+)?)", part) for part in parts[1:]]
    found = {
        m.group(1): m.group(2)
        for m in options
        if m is not None and m.group(1) in known and ("." not in m.group(2) or m.group(1) in FRACTIONAL_OPTIONS)
    }
    if not known or parts[0] != "rand" or len(found) != len(options):
        libraries = ", ".join(f"{name}:rand-<{'|'.join(keys)}><number>-..." for name, keys in RAND_AUGMENT_OPTIONS.items())
        raise ValueError(f"expected a RandAugment policy {libraries}, got {value!r}")
    return library, found


def _rand_augment(value: Any) -> str:
    rand_augment_policy(value)
    return value


def _names(kind: str) -> Check:
    def check(value: Any) -> tuple[str, ...]:
        if not isinstance(value, (list, tuple)) or any(v not in PARAMETERS[kind] for v in value) or len(set(value)) != len(value):
            raise ValueError(f"expected a list of distinct names among {', '.join(PARAMETERS[kind])}, got {value!r}")
        return tuple(value)

    return check


def _trained(kind: str) -> dict[str, Check]:
    return {
        "learning_rates": _list_of(_between(0.0, float("inf"), True, True)),  # for base_batch_size, scaled linearly
        "weight_decays": _list_of(_between(0.0, float("inf"), False, True)),
        "epochs": _integer(1),
        "batch_size": _integer(1),
        "base_batch_size": _integer(1),
        "warmup_fraction": _between(0.0, 1.0, False, True),  # of all steps, linear from 0, then cosine to 0
        "grad_clip": _clip,  # per head: each head's gradient norm is clipped on its own
        "no_weight_decay": _names(kind),
        "data_mode": _choice(DATA_MODES),
        "augmentation": _choice(AUGMENTATIONS),  # online only: cached features are eval crops
        "min_crop_scale": _between(0.0, 1.0, True, False),
    }


# the attentive probe's optimizer and training views beyond the shared fields (aimbench.probes.features.views)
ATTENTIVE_EXTRA: dict[str, Check] = {
    "betas": _pair(_between(0.0, 1.0, False, True), ordered=False),  # AdamW's
    "min_lr": _between(0.0, float("inf"), False, True),  # where the cosine ends, absolute (not scaled with the batch)
    "crop_ratio": _pair(_between(0.0, float("inf"), True, True), ordered=True),  # RandomResizedCrop's aspect ratio range
    "interpolation": _choice(INTERPOLATIONS),  # the crop's
    "flip_prob": _between(0.0, 1.0, False, False),  # horizontal flip
    "rand_augment": _rand_augment,  # the strong views' RandAugment
    "color_jitter": _positive_or_false("jitter strength"),  # brightness, contrast, saturation; off with RandAugment, as timm
    "random_erasing": _between(0.0, 1.0, False, False),  # the strong views' random erasing probability
}

FIELDS: dict[str, dict[str, Check]] = {
    "attentive": {**_trained("attentive"), **ATTENTIVE_EXTRA},
    "linear": {
        **_trained("linear"),
        "grid_search": _choice(GRID_SEARCHES),
        "head_precision": _choice(HEAD_PRECISIONS),
        "optimizer": _choice(OPTIMIZERS),
        "momentum": _between(0.0, 1.0, False, True),  # SGD's; AdamW has its own moments
        "init_std": _between(0.0, float("inf"), False, True),  # heads' weights from N(0, std^2), biases 0; 0: all zeros
        "feature_norm": _choice(FEATURE_NORMS),
        "block_norm": _choice(BLOCK_NORMS),
        "token_kinds": _list_of(_choice(TOKEN_KINDS)),  # what each layer set's heads read (aimbench.cards.backbone_card.column_kinds)
        "epoch_length": _integer(0),  # optimizer steps per epoch; 0: one pass over the train split
    },
    "knn": {"ks": _list_of(_integer(1)), "temperature": _between(0.0, float("inf"), True, True)},
    SPLITS: {"val_fraction": _between(0.0, 1.0, True, True)},  # for tasks whose card gives neither split nor fraction
}
# the trained probe kinds, each a section (aimbench.probes.kinds registers one with this name); released heads follow no protocol
PROTOCOL_KINDS = tuple(section for section in FIELDS if section != SPLITS)


def check_field(section: str, name: str, value: Any, fields: Fields) -> Any:
    """``value`` of field ``name`` of ``section``, typed; a CardError naming ``fields``' file and the field otherwise."""
    if name not in FIELDS[section]:
        raise fields.error(name, f"unknown field; {section} fields are {', '.join(FIELDS[section])}")
    try:
        return FIELDS[section][name](value)
    except ValueError as exc:
        raise fields.error(name, str(exc)) from None


@dataclass(frozen=True)
class Sourced:
    """One field of a protocol: its value and where that value comes from."""

    value: Any
    source: str


@dataclass(frozen=True)
class ProtocolSpec:
    name: str
    description: str
    citation: str
    sections: Mapping[str, Mapping[str, Sourced]] = field(hash=False)  # kind (or "splits") -> field -> sourced value
    card_path: Path
    # kind -> task name -> the fields whose value differs for that task ([<kind>.tasks.<task>])
    task_sections: Mapping[str, Mapping[str, Mapping[str, Sourced]]] = field(default_factory=dict, hash=False)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(kind for kind in PROTOCOL_KINDS if kind in self.sections)

    @property
    def val_fraction(self) -> Sourced:
        return self.sections[SPLITS]["val_fraction"]

    def for_task(self, kind: str, task: str) -> Mapping[str, Sourced]:
        """The fields of ``kind`` whose value this protocol gives differently for ``task`` (most tasks: none)."""
        return self.task_sections.get(kind, {}).get(task, {})


def _read_fields(section: str, fields: Fields, names: Iterable[str]) -> dict[str, Sourced]:
    """The ``{ value, source }`` entries ``names`` of a table, each checked by the section's rules."""
    values = {}
    for name in names:
        if not isinstance(fields.table.get(name, {}), dict):
            raise fields.error(name, 'expected { value = ..., source = "..." }')
        entry = fields.table_of(name)
        values[name] = Sourced(check_field(section, name, entry.raw("value"), fields), entry.str("source"))
        entry.reject_unknown()
    return values


def _read_section(section: str, fields: Fields) -> tuple[dict[str, Sourced], dict[str, dict[str, Sourced]]]:
    """A section's fields, every one required, and its per-task tables, each listing only the fields that differ."""
    per_task = {}
    if section != SPLITS and TASKS in fields.table:
        tasks = fields.table_of(TASKS)
        for task in tasks.table:
            overrides = tasks.table_of(task)
            per_task[task] = _read_fields(section, overrides, overrides.table)  # unknown names fail in check_field
    values = _read_fields(section, fields, FIELDS[section])
    fields.reject_unknown()
    return values, per_task


def parse_protocol_card(data: dict[str, Any], path: Path) -> ProtocolSpec:
    """Validate a parsed protocol card: every present section complete, every field sourced."""
    top = Fields(data, path)
    name = top.str("name")
    description = top.str("description")
    citation = top.str("citation", default="")
    sections = {SPLITS: _read_section(SPLITS, top.table_of(SPLITS))[0]}
    task_sections = {}
    for kind in PROTOCOL_KINDS:
        if kind in data:
            sections[kind], task_sections[kind] = _read_section(kind, top.table_of(kind))
    top.reject_unknown()
    if name != path.stem:
        raise CardError(path, "name", f"must match the file name '{path.stem}', got '{name}'")
    if len(sections) == 1:
        raise CardError(path, PROTOCOL_KINDS[0], f"a protocol defines at least one of [{'], ['.join(PROTOCOL_KINDS)}]")
    return ProtocolSpec(name, description, citation, sections, path, task_sections)
