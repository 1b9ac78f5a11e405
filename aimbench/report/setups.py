"""A setup: what one leaderboard row or layer curve stands for.

A record's identity (``aimbench.store.schema.IDENTITY_COLUMNS``) less its task and seed is a
setup: backbone, weights, probe kind, protocol, layer spec, image limit and dtype. Seeds of one
setup are averaged; different setups are never averaged together, and a row's label names what
sets it apart (its weights, a ``--limit``, a precision, a protocol or layer spec), so two rows
never look alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aimbench.identity import SETUP_COLUMNS, default_protocol


@dataclass(frozen=True, kw_only=True)
class Setup:
    backbone: str
    weights_key: str
    probe: str
    protocol: str
    layers_spec: str | None
    image_limit: int | None
    dtype: str | None
    weights_name: str = field(default="", compare=False)  # a label of weights_key, not part of the setup

    @classmethod
    def of(cls, row: dict[str, Any]) -> Setup:
        """The setup of a row that has the ``SETUP_COLUMNS`` and ``weights_name`` (a test holds the fields to those columns)."""
        return cls(
            backbone=row["backbone"], weights_key=row["weights_key"], probe=row["probe"], protocol=row["protocol"],
            layers_spec=row["layers_spec"], image_limit=row["image_limit"], dtype=row["dtype"], weights_name=row.get("weights_name") or "",
        )  # fmt: skip

    @property
    def limited(self) -> bool:
        return self.image_limit is not None

    def qualifiers(self, varying: Iterable[str] = (), name_protocol: bool = False) -> list[str]:
        """What sets this setup apart: a limit, a non-fp32 dtype and a protocol other than the probe
        kind's default always (any protocol with ``name_protocol``, as Δ-vs-paper rows name what they
        were measured under); the layer spec where it varies between rows of the same backbone and probe."""
        out = [f"limit {self.image_limit}"] if self.limited else []
        out += [self.dtype] if self.dtype not in (None, "fp32") else []
        named = name_protocol or self.protocol != default_protocol(self.probe)
        out += [f"protocol {self.protocol}"] if self.protocol and named else []
        out += [f"layers {self.layers_spec}"] if "layers_spec" in varying and self.layers_spec else []
        return out

    def probe_label(self, varying: Iterable[str] = (), name_protocol: bool = False) -> str:
        return " · ".join([self.probe, *self.qualifiers(varying, name_protocol)])


def varying_columns(setups: Sequence[Setup]) -> dict[tuple[str, str], set[str]]:
    """Per (backbone, weights): the setup columns whose values differ among its setups of one probe."""
    seen: dict[tuple[str, str, str], dict[str, set[Any]]] = {}
    for setup in setups:
        values = seen.setdefault((setup.backbone, setup.weights_key, setup.probe), {})
        for column in ("layers_spec", "protocol", "dtype"):
            values.setdefault(column, set()).add(getattr(setup, column))
    varying: dict[tuple[str, str], set[str]] = {}
    for (backbone, weights, _probe), values in seen.items():
        varying.setdefault((backbone, weights), set()).update(c for c, v in values.items() if len(v) > 1)
    return varying


def setup_sql() -> str:
    """The setup columns as a SQL list, for GROUP BY and PARTITION BY."""
    return ", ".join(SETUP_COLUMNS)
