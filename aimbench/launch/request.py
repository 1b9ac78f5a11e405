"""One evaluation as a user asks for it, from the command line or from Python: built and checked once,
then handed to a launcher (``aimbench.launch.base.Launcher``), which plans and runs it.

:meth:`EvalRequest.from_options` is the one place user-level arguments become a request: the CLI
(``aimbench eval``) and the Python API (``aimbench.evaluate``) both call it, so a comma-separated
list, a seed count or a results path means the same whichever way it is given (as
lm-evaluation-harness builds its evaluator config once, ``from_cli``).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from aimbench.cards.registry import Registry
from aimbench.errors import UserError
from aimbench.launch.cells import Cell, plan_cells
from aimbench.launch.options import RunOptions
from aimbench.names import split_names
from aimbench.probes import check_overrides

if TYPE_CHECKING:
    from aimbench.adapters.base import Backbone

# What a user may pass as seeds and paths: ``seed=3``, ``seed=[0, 1]``, ``seed="0,1"``; ``"results"`` or a Path.
Seeds = Union[int, str, Sequence[int]]
PathLike = Union[str, Path]
# The largest seed: the record's seed column is a 32-bit INTEGER, and numpy's generators take no negative seed.
MAX_SEED = 2**31 - 1


def parse_seeds(seed: Seeds | None, seeds: int | None) -> tuple[int, ...]:
    """The seeds a request runs: ``seed`` names them (``3``, ``[0, 1]``, ``"0,1,2"``), ``seeds=N`` is
    0..N-1; not both. Neither is seed 0. Each seed is its own cell, so a count and a list must never
    be confused: ``seeds=3`` runs three cells, ``seed=3`` one."""
    if seeds is not None:
        if seed is not None:
            raise UserError("--seed names seeds (e.g. 0,1,2) and --seeds N is seeds 0..N-1: give one or the other")
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise UserError(f"--seeds N takes a positive count (seeds 0..N-1), got {seeds!r}; name seeds themselves with --seed 0,1,2")
        return tuple(range(seeds))
    if seed is None:
        return (0,)
    items: Sequence[object] = split_names(seed) if isinstance(seed, str) else list(seed) if isinstance(seed, Sequence) else [seed]
    chosen = []
    for item in items:
        try:
            if isinstance(item, bool):
                raise TypeError
            chosen.append(int(item) if isinstance(item, str) else operator.index(item))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise UserError(f"bad --seed {seed!r}: use integers like 0 or 0,1,2") from None
        if not 0 <= chosen[-1] <= MAX_SEED:
            raise UserError(f"bad --seed {chosen[-1]}: seeds are integers from 0 to {MAX_SEED}")
    return tuple(chosen)


def _layer_spec(layers: str | Sequence[int | str] | None) -> str | None:
    """``--layers`` as the planner reads it: a string as given (it is part of a cell's identity, so
    never rewritten), a sequence such as ``[0, -1, "avg:3-5"]`` joined with commas."""
    if layers is None or isinstance(layers, str):
        return layers
    return ",".join(str(item) for item in layers)


def _path(value: PathLike | None) -> Path | None:
    return None if value is None else Path(value)


@dataclass(frozen=True, kw_only=True)
class EvalRequest:
    """Backbones x tasks x probe kinds x seeds under one recipe; each combination is a cell with its own record.

    ``layers`` None is each card's default (every block plus its published windows); ``epochs``,
    ``data_mode``, ``grid_search`` and ``head_precision`` override the protocol card's fields and are recorded as overrides; ``overwrite``
    re-runs cells whose record exists. ``options`` say how to run, never what is measured.

    Keyword-only, and holding parsed values only (tuples of names and of seeds): user input goes
    through :meth:`from_options`, which parses it once.
    """

    backbones: tuple[str, ...]
    tasks: tuple[str, ...]
    probes: tuple[str, ...] = ("linear",)
    seeds: tuple[int, ...] = (0,)
    layers: str | None = None
    limit: int | None = None
    weights: str | None = None
    name: str | None = None
    protocol: str | None = None  # None: each probe kind's default card (aimbench.identity.DEFAULT_PROTOCOLS)
    dtype: str = "fp32"
    epochs: int | None = None
    data_mode: str | None = None
    grid_search: str | None = None  # linear probes: "full" (every head to the end) | "halving" (successive halving on val)
    head_precision: str | None = None  # linear probes: "bf16" (bf16 products, fp32 weights) | "fp32"
    overwrite: bool = False
    options: RunOptions = field(default_factory=RunOptions)
    # backbones built in this process from a user's module (aimbench.evaluate(model=...)), named in ``backbones``
    modules: tuple[Backbone, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        for attribute in ("backbones", "tasks", "probes", "seeds"):
            value = getattr(self, attribute)
            if isinstance(value, (str, int)):  # "a,b" would become ("a", ",", "b"): a caller's bug, not user input
                raise TypeError(
                    f"EvalRequest.{attribute} takes a tuple, got {value!r}; build requests from user input with EvalRequest.from_options"
                )
            object.__setattr__(self, attribute, tuple(value))
        if self.layers is not None and not self.layers.strip():
            raise UserError("--layers names no layer set; leave it out for the card's default")
        check_overrides(self.overrides)  # by the protocol card's own field rules, whichever probes are named

    @classmethod
    def from_options(
        cls,
        backbones: str | Sequence[str],
        tasks: str | Sequence[str],
        probe: str | Sequence[str] = "linear",
        *,
        seed: Seeds | None = None,
        seeds: int | None = None,
        layers: str | Sequence[int | str] | None = None,
        limit: int | None = None,
        weights: str | None = None,
        name: str | None = None,
        protocol: str | None = None,
        dtype: str = "fp32",
        epochs: int | None = None,
        data_mode: str | None = None,
        grid_search: str | None = None,
        head_precision: str | None = None,
        overwrite: bool = False,
        results: PathLike = "results",
        data_root: PathLike | None = None,
        cards: PathLike | Sequence[PathLike] | None = (),
        device: str = "auto",
        batch_size: int = 64,
        workers: int = 0,
        cache_dir: PathLike | None = None,
        memory_gb: float | None = None,
        ranks: int = 1,
        nodes: int = 1,
        modules: Sequence[Backbone] = (),
    ) -> EvalRequest:
        """A request from the arguments of ``aimbench eval`` / ``aimbench.evaluate``, each with the
        meaning of the CLI option of the same name, parsed here and nowhere else.

        ``backbones``, ``tasks`` and ``probe``: comma-separated strings or sequences of names.
        ``seed``: the seeds themselves (an int, a sequence of ints, or ``"0,1,2"``); ``seeds``: a
        count N, seeds 0..N-1; not both, neither is seed 0. ``layers``: a ``--layers`` string or a
        sequence of its items (``[0, -1, "avg:3-5"]``). Paths may be ``str`` or ``Path``; ``cards``
        one folder or several. ``modules``: backbones wrapped from in-memory modules, each named in
        ``backbones`` by its spec's name. ``ranks``: processes (GPUs) that run each cell together, over ``nodes`` machines. Bad values raise :class:`~aimbench.errors.UserError` here,
        before anything is planned or loaded.
        """
        folders = () if cards is None else (cards,) if isinstance(cards, (str, Path)) else tuple(cards)
        options = RunOptions(
            results_dir=Path(results),
            data_root=_path(data_root),
            card_dirs=tuple(Path(folder) for folder in folders),
            device=device,
            batch_size=batch_size,
            workers=workers,
            cache_dir=_path(cache_dir),
            memory_gb=memory_gb,
            ranks=ranks,
            nodes=nodes,
        )
        return cls(
            backbones=split_names(backbones),
            tasks=split_names(tasks),
            probes=split_names(probe),
            seeds=parse_seeds(seed, seeds),
            layers=_layer_spec(layers),
            limit=limit,
            weights=weights,
            name=name,
            protocol=protocol,
            dtype=dtype,
            epochs=epochs,
            data_mode=data_mode,
            grid_search=grid_search,
            head_precision=head_precision,
            overwrite=overwrite,
            options=options,
            modules=tuple(modules),
        )

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
        """The cards, plus the specs of the request's in-memory modules."""
        registry = Registry.load(self.options.card_dirs)
        return registry.with_backbones(module.spec for module in self.modules) if self.modules else registry

    def cells(self, registry: Registry) -> list[Cell]:
        """Every cell of the request, each name and option validated; nothing is loaded."""
        return plan_cells(
            registry, self.backbones, self.tasks, self.probes, self.seeds, self.layers, self.limit, self.weights,
            self.overrides, self.dtype, self.protocol, self.name,
        )  # fmt: skip
