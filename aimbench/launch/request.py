"""One evaluation as a user asks for it, from the command line or from Python: built and checked once,
then handed to a launcher (``aimbench.launch.base.Launcher``), which plans and runs it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aimbench.cards.protocol_card import DATA_MODES, GRID_SEARCHES, HEAD_PRECISIONS
from aimbench.cards.registry import Registry
from aimbench.errors import UserError
from aimbench.identity import DEFAULT_PROTOCOL
from aimbench.launch.cells import Cell, plan_cells
from aimbench.launch.options import RunOptions


def names(values: str | Sequence[str]) -> tuple[str, ...]:
    """``"a,b"`` or ``["a", "b"]`` as a tuple of non-empty names, order kept."""
    items = values.split(",") if isinstance(values, str) else values
    return tuple(item.strip() for item in items if item.strip())


@dataclass(frozen=True)
class EvalRequest:
    """Backbones x tasks x probe kinds x seeds under one recipe; each combination is a cell with its own record.

    ``layers`` None is each card's default (every block plus its published windows); ``epochs``,
    ``data_mode``, ``grid_search`` and ``head_precision`` override the protocol card's fields and are recorded as overrides; ``overwrite``
    re-runs cells whose record exists. ``options`` say how to run, never what is measured.
    """

    backbones: tuple[str, ...]
    tasks: tuple[str, ...]
    probes: tuple[str, ...] = ("linear",)
    seeds: tuple[int, ...] = (0,)
    layers: str | None = None
    limit: int | None = None
    weights: str | None = None
    name: str | None = None
    protocol: str = DEFAULT_PROTOCOL
    dtype: str = "fp32"
    epochs: int | None = None
    data_mode: str | None = None
    grid_search: str | None = None  # linear probes: "full" (every head to the end) | "halving" (successive halving on val)
    head_precision: str | None = None  # linear probes: "bf16" (bf16 products, fp32 weights) | "fp32"
    overwrite: bool = False
    options: RunOptions = field(default_factory=RunOptions)

    def __post_init__(self) -> None:
        for attribute in ("backbones", "tasks", "probes"):
            object.__setattr__(self, attribute, names(getattr(self, attribute)))
        object.__setattr__(self, "seeds", (self.seeds,) if isinstance(self.seeds, int) else tuple(self.seeds))
        if self.layers is not None and not self.layers.strip():
            raise UserError("--layers names no layer set; leave it out for the card's default")
        if self.epochs is not None and self.epochs < 1:
            raise UserError(f"--epochs must be at least 1, got {self.epochs}")
        if self.data_mode is not None and self.data_mode not in DATA_MODES:
            raise UserError(f"unknown data mode '{self.data_mode}'; one of {', '.join(DATA_MODES)}")
        if self.grid_search is not None and self.grid_search not in GRID_SEARCHES:
            raise UserError(f"unknown grid search '{self.grid_search}'; one of {', '.join(GRID_SEARCHES)}")
        if self.head_precision is not None and self.head_precision not in HEAD_PRECISIONS:
            raise UserError(f"unknown head precision '{self.head_precision}'; one of {', '.join(HEAD_PRECISIONS)}")

    @property
    def overrides(self) -> Mapping[str, Any]:
        """The protocol fields this request sets explicitly (recorded as ``cli`` overrides)."""
        chosen = {
            "epochs": self.epochs,
            "data_mode": self.data_mode,
            "grid_search": self.grid_search,
            "head_precision": self.head_precision,
        }
        return {name: value for name, value in chosen.items() if value is not None}

    def registry(self) -> Registry:
        return Registry.load(self.options.card_dirs)

    def cells(self, registry: Registry) -> list[Cell]:
        """Every cell of the request, each name and option validated; nothing is loaded."""
        return plan_cells(
            registry, self.backbones, self.tasks, self.probes, self.seeds, self.layers, self.limit, self.weights,
            self.overrides, self.dtype, self.protocol, self.name,
        )  # fmt: skip
