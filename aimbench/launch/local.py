"""The local launcher: cells run here, one after another (each in this process, in ``--gpus N``
processes started for it, or as one rank of a torchrun world); pre-training runs here too (one
process, or one rank of a torchrun world).

Resume works at the cell level: a cell whose record file already exists (same configuration
hash) is skipped unless the request overwrites, so an interrupted matrix continues where it
stopped, and a linear or attentive probe inside a cell continues from its last checkpoint.
The Slurm launcher runs the very same :func:`run_cell`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from aimbench.errors import UserError
from aimbench.launch.base import STOPPED, CellResult, Display, EvalPlan, JobRow, Launched, Launcher
from aimbench.launch.cell_progress import STATE_DIR, read_progress
from aimbench.launch.preflight import preflight_pretrain
from aimbench.launch.world import launched_nodes, local_ranks
from aimbench.pretrain.request import PretrainRequest
from aimbench.store.records import finished, record_path

if TYPE_CHECKING:
    from aimbench.distributed import World


class LocalLauncher(Launcher):
    name: ClassVar[str] = "local"
    local: ClassVar[bool] = True

    def __init__(self, display: Display | None = None) -> None:
        self.display = display or Display()

    def cell_world(self, gpus: int | None, device: str) -> tuple[int, int]:
        """``--gpus N`` processes per cell here, or the world torchrun (or srun) started this process in."""
        return local_ranks(gpus, device), launched_nodes()

    def submit(self, plan: EvalPlan) -> Launched:
        """Run the plan's cells in order; the display hears of each as soon as its record is written.

        Each cell runs on ``options.ranks`` processes: this one, or (``--gpus N``) N processes started
        here per cell (``aimbench.launch.spawn``). Under torchrun the world is given: every rank runs
        this with the same plan, rank 0's skip decisions bind them all, and only rank 0 shows anything."""
        from aimbench.distributed import world_from_env
        from aimbench.launch.run_cell import run_cell  # imports torch: only when cells run

        options, outcomes = plan.request.options, []
        world = world_from_env()
        spawn = options.ranks > 1 and world.size == 1
        if spawn and plan.request.modules:
            raise UserError(f"an in-memory model cannot be sent to {options.ranks} processes: evaluate it on one rank "
                            "(ranks=1), or give it a backbone card")  # fmt: skip
        display = self.display if world.is_main else Display()
        if world.size > 1:
            plan = agreed_plan(plan, world)
        loaded = {module.spec.name: module for module in plan.request.modules}
        for planned in plan.cells:
            if planned.skip:
                outcome = CellResult(planned.identity, record_path(options.results_dir, planned.record), skipped=True)
            else:
                with display.cell(planned.identity) as stage:
                    if spawn:
                        from aimbench.launch.spawn import run_ranks

                        path = run_ranks(run_cell, (planned, options), options.ranks, stage)
                    else:
                        path = run_cell(planned, options, stage, plan.registry, loaded)
                outcome = CellResult(planned.identity, path, skipped=False)
            outcomes.append(outcome)
            display.cell_done(outcome, len(outcomes), len(plan.cells))
        return Launched(outcomes=outcomes)

    def pretrain(self, request: PretrainRequest) -> Launched:
        """Train here; under torchrun every rank calls this, and rank 0 writes the run's files."""
        preflight_pretrain(request, local=True)
        from aimbench.pretrain.checkpoint import RunFiles  # imports torch: only once every option has been checked
        from aimbench.pretrain.run import prepare_run, run_pretrain
        from aimbench.pretrain.trainer import summary

        setup = prepare_run(request)
        with self.display.pretrain(setup) as on_step:
            history = run_pretrain(request, setup, on_step).history
        if not setup.world.is_main:  # every rank trains; the main one writes the files and speaks for the run
            return Launched()
        files = RunFiles.of(request.out)
        return Launched(paths=[files.trunk, files.metrics, files.loss_curve], summary=summary(history))

    def status(self, results: Path) -> list[JobRow]:
        """Cells that left resume state and no record: stopped (Ctrl-C, a crash), or running in another shell now."""
        state_dir = results / STATE_DIR
        stems = sorted({state.name.split(".")[0] for state in state_dir.glob("*.pt")})  # linear: <stem>.pt, attentive: <stem>.passN.pt
        return [
            JobRow(submission="local", cell=stem, job_id="", state=STOPPED, elapsed="", record=False, stdout=Path(), stderr=Path(),
                   progress=read_progress(state_dir / f"{stem}.progress.json") or "resumes when the same eval runs again")
            for stem in stems
            if not finished(record_path(results, f"{stem}.json"))
        ]  # fmt: skip

    def cancel(self, results: Path, which: str) -> list[str]:
        raise UserError("local runs have no queue to cancel: stop one with Ctrl-C (it resumes when run again)")


def agreed_plan(plan: EvalPlan, world: World) -> EvalPlan:
    """``plan`` with rank 0's skip decisions: every rank planned alone, and a record that appeared
    between two ranks' planning must not send one rank into a cell the others skip (it would wait in
    a collective forever). Opens the process group (``run_cell`` finds it open)."""
    from aimbench.distributed import from_rank_zero, init_process_group, rank_device

    init_process_group(world, rank_device(plan.request.options.device, world))
    skips = from_rank_zero(lambda: [planned.skip for planned in plan.cells], world)
    return replace(plan, cells=[replace(planned, skip=skip) for planned, skip in zip(plan.cells, skips)])
