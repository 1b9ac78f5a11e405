"""The launcher interface: where a request's work runs (this process, or a Slurm cluster).

Every launcher plans an :class:`EvalRequest` the same way (data present, names valid, folders
writable, space enough, finished cells set aside) and runs the same callables (``run_cell`` for an
eval cell, ``aimbench.pretrain.run.run_pretrain`` for pre-training); they differ only in where
those run and how one sees and stops them (``submit``, ``pretrain``, ``status``, ``cancel``).
Adding a backend means one subclass. What the user sees while work runs here (progress bars,
plain log lines) comes in through a :class:`Display`, so no launcher knows about terminals.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from aimbench.cards.registry import Registry
from aimbench.identity import CellIdentity
from aimbench.launch.cells import Cell
from aimbench.launch.preflight import preflight_eval
from aimbench.launch.request import EvalRequest
from aimbench.probes import LayerResult, ProbeResult, StageCallback, no_progress
from aimbench.store.records import finished, read_record, record_path

if TYPE_CHECKING:
    from aimbench.launch.memory import MemoryNeed
    from aimbench.pretrain.request import PretrainRequest
    from aimbench.pretrain.run import PretrainSetup


# Slurm's job states (sacct), the vocabulary every backend reports in
STOPPED = "STOPPED"  # a local cell with resume state and no record: interrupted (or running in another shell)
FINISHED = (STOPPED, "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE")


@dataclass(frozen=True, kw_only=True)
class JobRow:
    submission: str
    cell: str
    job_id: str
    state: str
    elapsed: str
    record: bool  # its record exists
    stdout: Path
    stderr: Path
    progress: str = ""  # e.g. "linear heads 40/100 (40%)", or why it is pending ("waiting: Resources"); empty once finished

    @property
    def finished(self) -> bool:
        return self.state in FINISHED or self.state.startswith("CANCELLED")

    @property
    def failed(self) -> bool:
        return self.state not in (
            "COMPLETED",
            "PENDING",
            "RUNNING",
            "REQUEUED",
            "COMPLETING",
            "UNKNOWN",
            STOPPED,
        ) and not self.state.startswith("CANCELLED")


class Display:
    """What a launcher shows while work runs in this process; the default shows nothing."""

    def cell(self, cell: CellIdentity) -> AbstractContextManager[StageCallback]:
        """Around one cell's run: the stage callback its probe reports to."""
        return contextlib.nullcontext(no_progress)

    def cell_done(self, outcome: CellResult, done: int, total: int) -> None:
        """After a cell's record is written (or found, when it is skipped)."""

    def pretrain(self, setup: PretrainSetup) -> AbstractContextManager[Callable[[Any], None]]:
        """Around a pre-training run: the callback each optimizer step reports its metrics to."""
        return contextlib.nullcontext(lambda _: None)


@dataclass(frozen=True, kw_only=True)
class PlannedCell:
    """One cell of a plan: what it is (computed once, here), whether it runs, and what it would ask the backend for."""

    cell: Cell
    identity: CellIdentity
    skip: bool  # its record exists and the request does not overwrite
    resources: dict[str, Any] = field(default_factory=dict)  # Slurm: the executor's parameters; local: none
    need: MemoryNeed | None = None  # the memory need the resources were sized from

    @property
    def record(self) -> str:
        """The record file's name."""
        return self.identity.record_name


@dataclass(frozen=True, kw_only=True)
class EvalPlan:
    request: EvalRequest
    registry: Registry  # the cards the plan was made from; a local run reuses them
    cells: list[PlannedCell]  # in the request's order
    dry_run: bool = False  # planned to be looked at only: the data may be absent, so it must not be submitted

    @property
    def to_run(self) -> list[PlannedCell]:
        return [planned for planned in self.cells if not planned.skip]

    @property
    def skipped(self) -> list[PlannedCell]:
        return [planned for planned in self.cells if planned.skip]


@dataclass(frozen=True)
class CellResult:
    """One evaluated cell: what it is, its record file, and, read when asked, the record (the store's
    schema) and its probe result typed. ``aimbench.evaluate`` returns these; launchers report them."""

    identity: CellIdentity
    path: Path
    skipped: bool  # the record existed and was not run again

    @property
    def key(self) -> str:
        return self.identity.key

    @cached_property
    def record(self) -> dict[str, Any]:
        return read_record(self.path)

    @cached_property
    def result(self) -> ProbeResult:
        return ProbeResult.from_record(self.record)

    @property
    def best(self) -> LayerResult:
        """The layer set selected on val, with its val and test scores."""
        return self.result.best

    @property
    def layers(self) -> dict[str, LayerResult]:
        """Every probed layer set by name (``block 5``, ``avg:3-5``, ``last``), its val-selected head."""
        return {layer.layer_set: layer for layer in self.result.layers}


@dataclass(frozen=True)
class Launched:
    """What ``submit`` or ``pretrain`` did: here, the outcomes (records, a trunk); on a cluster, the jobs and where their state is."""

    outcomes: list[CellResult] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)  # files written here (a pre-training run's trunk)
    job_ids: list[str] = field(default_factory=list)
    state_file: Path | None = None
    summary: dict[str, Any] = field(default_factory=dict)  # a pre-training run's first and last loss, throughput


class Launcher(ABC):
    name: ClassVar[str]
    local: ClassVar[bool]  # runs in this process: the device is checked here

    def plan(self, request: EvalRequest, dry_run: bool = False) -> EvalPlan:
        """Every check that needs no model, then each cell with its record name and resources; nothing runs.

        ``dry_run``: a plan to look at (and cost, ``aimbench.launch.cost``), never to run: the data
        need not be here yet (split sizes come from the task cards) and free space is not required."""
        registry = request.registry()
        if not dry_run:
            from aimbench.data import require_ready  # before any weights are hashed or loaded: missing data fails in a second

            require_ready(registry.expand_tasks(list(request.tasks)), request.options.data_root)
        cells = [(cell, cell.identity(registry)) for cell in request.cells(registry)]
        preflight_eval(cells, registry, request.options, request.overwrite, local=self.local, dry_run=dry_run)
        planned = []
        for cell, identity in cells:
            skip = not request.overwrite and finished(record_path(request.options.results_dir, identity.record_name))
            resources, need = self.resources(cell, registry)
            planned.append(PlannedCell(cell=cell, identity=identity, skip=skip, resources=resources, need=need))
        return EvalPlan(request=request, registry=registry, cells=planned, dry_run=dry_run)

    def resources(self, cell: Cell, registry: Registry) -> tuple[dict[str, Any], MemoryNeed | None]:
        """What ``cell`` asks the backend for (none when it runs here)."""
        return {}, None

    @abstractmethod
    def cell_world(self, gpus: int | None, device: str) -> tuple[int, int]:
        """The ranks that run each cell together and the machines they span, given ``--gpus`` and
        ``--device`` (``aimbench.launch.world``); refused in one line where they do not fit this backend."""

    @abstractmethod
    def submit(self, plan: EvalPlan) -> Launched:
        """Run (here) or queue (on a cluster) every cell of ``plan`` that is not skipped."""

    @abstractmethod
    def pretrain(self, request: PretrainRequest) -> Launched:
        """Run or queue one pre-training run."""

    @abstractmethod
    def status(self, results: Path) -> list[JobRow]:
        """The unfinished and recent work this backend knows of under ``results``."""

    @abstractmethod
    def cancel(self, results: Path, which: str) -> list[str]:
        """Stop unfinished work (``which``: an id, or ``all``); returns what was stopped."""
