"""From a protocol card to the typed config a probe trains with, for one task.

Resolution order, each layer overriding the one before: the protocol card's values, then the
values the protocol card gives that task in particular (``[attentive.tasks.imagenet-1k]``, still
the protocol's own recipe, so their origin is "protocol"), then the task card's overrides (``[protocol.<kind>]`` tables, its ``augmentation``, its own val split or
fraction), then explicit options (``--epochs``, ``--data-mode``, or ``plan_cells(overrides=...)``).
Every resolved value keeps its provenance (the card's source text, or which card or option set
it), so a record says not only what a recipe was but where each number came from and which ones
were changed. Two values follow from others: the val fraction is None when the task has an
official val split, and cached features are eval crops, so ``data_mode = "cached"`` means no
augmentation.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from functools import cache
from typing import Any

from aimbench.cards.protocol_card import FIELDS, PROTOCOL_KINDS, TASKS, ProtocolSpec, parse_protocol_card
from aimbench.cards.registry import builtin_cards_root, read_toml
from aimbench.cards.task_card import TaskSpec
from aimbench.errors import UserError, unknown_name
from aimbench.identity import DEFAULT_PROTOCOLS, default_protocol
from aimbench.probes.config import ProbeConfig, Provenance, values
from aimbench.probes.kinds import probe_kind

__all__ = ["DEFAULT_PROTOCOLS", "default_config", "default_protocol", "protocol_label", "protocol_record", "resolve_config"]

PROTOCOL, TASK, CLI = "protocol", "task", "cli"  # where a resolved value comes from


def _checked(kind: str, name: str, value: Any) -> Any:
    try:
        return FIELDS[kind][name](value)
    except ValueError as exc:
        raise UserError(f"override {name}={value!r} for the {kind} probe: {exc}") from None


def _check_names(overrides: Mapping[str, Any]) -> None:
    """Explicit overrides name fields of some trained probe; a misspelt one gets its close matches."""
    known = sorted({field for kind in PROTOCOL_KINDS for field in FIELDS[kind]})
    for name in overrides:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f"did you mean: {', '.join(close)}?" if close else f"fields: {', '.join(known)}"
            raise UserError(f"unknown protocol field '{name}'; {hint}")


def check_overrides(overrides: Mapping[str, Any]) -> None:
    """Explicit overrides as a request states them, before it names its probes' configs: known
    fields, each with a value some probe kind's field accepts (by the protocol card's own rules;
    :func:`resolve_config` then checks it against each kind it applies to)."""
    _check_names(overrides)
    for name, value in overrides.items():
        problems = []
        for kind in (kind for kind in PROTOCOL_KINDS if name in FIELDS[kind]):
            try:
                FIELDS[kind][name](value)
                break
            except ValueError as exc:
                problems.append(str(exc))
        else:
            raise UserError(f"{name} {value!r}: {problems[0]}")


def _val_fraction(protocol: ProtocolSpec, task: TaskSpec | None) -> tuple[float | None, Provenance]:
    if task is not None and task.val.split is not None:
        return None, Provenance(f"task card {task.name}: official val split '{task.val.split}'", TASK)
    if task is not None and task.val.fraction is not None:
        return task.val.fraction, Provenance(f"task card {task.name}: splits.val.fraction", TASK)
    return protocol.val_fraction.value, Provenance(protocol.val_fraction.source, PROTOCOL)


def resolve_config(
    protocol: ProtocolSpec, kind: str, task: TaskSpec | None = None, overrides: Mapping[str, Any] | None = None
) -> ProbeConfig:
    """The config of probe ``kind`` under ``protocol`` for ``task`` (None: the card's values alone),
    with explicit ``overrides`` (field -> value, applied to every kind that has the field)."""
    if kind not in protocol.sections:
        raise UserError(
            f"protocol '{protocol.name}' defines no {kind} probe (it defines {', '.join(protocol.kinds)}; {protocol.card_path})"
        )
    _check_names(overrides or {})
    resolved = {name: (sourced.value, Provenance(sourced.source, PROTOCOL)) for name, sourced in protocol.sections[kind].items()}
    if task is not None:
        for name, sourced in protocol.for_task(kind, task.name).items():
            resolved[name] = (sourced.value, Provenance(f"[{kind}.{TASKS}.{task.name}] {sourced.source}", PROTOCOL))
        for name, value in task.protocol.get(kind, {}).items():  # validated with the task card
            resolved[name] = (value, Provenance(f"task card {task.name}: {name}", TASK))
    for name, value in (overrides or {}).items():
        if name in FIELDS[kind]:
            resolved[name] = (_checked(kind, name, value), Provenance(f"explicit option {name}={value!r}", CLI))
    resolved["val_fraction"] = _val_fraction(protocol, task)
    if resolved.get("data_mode", (None,))[0] == "cached":
        origin = resolved["data_mode"][1].origin
        resolved["augmentation"] = ("none", Provenance("data_mode cached: eval-crop features, never augmented", origin))
    config_class = probe_kind(kind).config_class
    assert config_class is not None, f"probe kind '{kind}' trains nothing and has no protocol section"
    return config_class(**{name: value for name, (value, _) in resolved.items()}, sources={name: p for name, (_, p) in resolved.items()})


@cache
def builtin_protocol(name: str) -> ProtocolSpec:
    """A protocol card shipped with aimbench, read without loading the rest of the registry."""
    folder = builtin_cards_root() / "protocols"
    path = folder / f"{name}.toml"
    if not path.is_file():
        raise unknown_name("protocol", name, [p.stem for p in folder.glob("*.toml")])
    return parse_protocol_card(read_toml(path), path)


def default_config(kind: str, protocol: str | None = None, **overrides: Any) -> ProbeConfig:
    """A shipped protocol's config for ``kind`` with no task (``protocol`` None: the kind's default
    card): what a cell built without a config trains with, and a short way to write a variant
    (``default_config("linear", "aim-v1", epochs=3)``)."""
    return resolve_config(builtin_protocol(protocol or default_protocol(kind)), kind, None, overrides)


def protocol_record(name: str, config: ProbeConfig) -> dict[str, Any]:
    """The resolved protocol as a record stores it: every field's value, source and origin, and
    which fields a task card or an explicit option changed."""
    resolved = values(config)
    fields = {
        field: {"value": resolved[field], "source": provenance.source, "from": provenance.origin}
        for field, provenance in config.sources.items()
    }
    return {"name": name, "fields": fields, "overridden": sorted(f for f, p in config.sources.items() if p.origin != PROTOCOL)}


def protocol_label(name: str, config: ProbeConfig | None) -> str:
    """The protocol as identity and reports name it: the card, plus every field an explicit option
    changed (``aim-v1+epochs=5``), so a run with a changed recipe is never taken for the card's own.
    Task-card overrides belong to the protocol as applied to that task and are not listed."""
    if config is None:
        return name
    resolved = values(config)
    changed = sorted(f for f, p in config.sources.items() if p.origin == CLI)
    return "+".join([name, *(f"{f}={_short(resolved[f])}" for f in changed)])


def _short(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
