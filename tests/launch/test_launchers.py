"""The launcher interface: one request, planned the same way by every backend; the local launcher
runs the plan here and reports through its display; the Slurm launcher groups cells by resources."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from aimbench.errors import UserError
from aimbench.identity import CellIdentity
from aimbench.launch.base import STOPPED, CellResult, Display
from aimbench.launch.local import LocalLauncher
from aimbench.launch.options import RunOptions
from aimbench.launch.request import EvalRequest
from aimbench.launch.slurm.launcher import SlurmLauncher, arrays
from aimbench.launch.slurm.settings import SlurmSettings
from aimbench.pretrain.request import PretrainRequest
from aimbench.probes.protocol import default_config


class Recorder(Display):
    def __init__(self) -> None:
        self.events: list[str] = []

    @contextmanager
    def cell(self, cell: CellIdentity):
        self.events.append(f"start {cell.key}")

        def stage(description: str, total: int):
            self.events.append(f"stage {description.split(' · ')[-1]}")
            return lambda _: None

        yield stage

    def cell_done(self, outcome: CellResult, done: int, total: int) -> None:
        self.events.append(f"{'skip' if outcome.skipped else 'done'} {done}/{total}")


def _request(tmp_path: Path, tiny_cards: Path, **fields: Any) -> EvalRequest:
    where: dict[str, Any] = {"results": tmp_path / "results", "cards": tiny_cards, "device": "cpu", "cache_dir": tmp_path / "cache"}
    return EvalRequest.from_options("micro-cls", "digits", fields.pop("probes", "knn"), limit=40, **where, **fields)


def test_a_request_is_checked_once_as_it_is_built(tmp_path: Path, tiny_cards: Path) -> None:
    request = _request(tmp_path, tiny_cards, probes="knn, linear", seed=3, epochs=2)
    assert (request.backbones, request.probes, request.seeds, dict(request.overrides)) == (
        ("micro-cls",),
        ("knn", "linear"),
        (3,),
        {"epochs": 2},
    )
    for bad in ({"epochs": 0}, {"data_mode": "streamed"}, {"layers": " "}, {"grid_search": "random"}, {"head_precision": "fp16"}):
        with pytest.raises(UserError):
            _request(tmp_path, tiny_cards, **bad)
    with pytest.raises(UserError, match="--batch-size"):
        RunOptions(batch_size=0)
    with pytest.raises(UserError, match="--lr"):
        PretrainRequest("aim-tiny", "data", lr=-1.0)


def test_the_local_launcher_runs_the_plan_and_a_second_plan_skips_it(tmp_path: Path, tiny_cards: Path) -> None:
    display = Recorder()
    launcher = LocalLauncher(display)
    plan = launcher.plan(_request(tmp_path, tiny_cards))
    assert [(p.cell.probe, p.skip, p.resources) for p in plan.cells] == [("knn", False, {})]
    launched = launcher.submit(plan)
    [outcome] = launched.outcomes
    assert json.loads(outcome.path.read_text())["cell_key"] == plan.cells[0].identity.key == outcome.key
    assert display.events[0].startswith("start micro-cls|digits|knn") and display.events[-1] == "done 1/1"
    assert "stage features train" in display.events
    again = launcher.plan(_request(tmp_path, tiny_cards))
    assert [p.skip for p in again.cells] == [True] and not again.to_run
    assert launcher.submit(again).outcomes[0].skipped


def test_local_status_lists_a_stopped_cell_and_cancel_says_how_to_stop_one(tmp_path: Path) -> None:
    results = tmp_path / "results"
    (results / "state").mkdir(parents=True)
    (results / "state" / "b__t__linear__seed0__abc.pt").write_bytes(b"state")
    (results / "state" / "b__t__attentive__seed0__def.pass0.pt").write_bytes(b"state")
    rows = LocalLauncher().status(results)
    assert [(r.cell, r.state, r.finished, r.failed) for r in rows] == [
        ("b__t__attentive__seed0__def", STOPPED, True, False),
        ("b__t__linear__seed0__abc", STOPPED, True, False),
    ]
    with pytest.raises(UserError, match="Ctrl-C"):
        LocalLauncher().cancel(results, "all")


def test_the_slurm_launcher_plans_like_the_local_one_and_groups_cells_by_resources(tmp_path: Path, tiny_cards: Path) -> None:
    request = _request(tmp_path, tiny_cards, probes="knn,linear", seed=(0, 1))
    launcher = SlurmLauncher(SlurmSettings(cpus_per_task=1))
    plan = launcher.plan(request)
    local = LocalLauncher().plan(request)
    assert [p.record for p in plan.cells] == [p.record for p in local.cells]
    assert all(p.resources["cpus_per_task"] == 1 and p.need is not None for p in plan.cells)
    [(parameters, members)] = arrays(plan)  # one backbone: one array
    assert len(members) == 4 and parameters == plan.cells[0].resources
    assert launcher.tasks_per_node == 1  # one task per GPU, at least one


def test_head_precision_is_a_recorded_protocol_override(tmp_path: Path, tiny_cards: Path) -> None:
    request = _request(tmp_path, tiny_cards, probes="linear", head_precision="bf16")
    [linear] = request.cells(request.registry())
    assert (
        linear.probe_config.head_precision == "bf16" and linear.identity(request.registry()).protocol == "dinov2-linear+head_precision=bf16"
    )
    assert default_config("linear").head_precision == "fp32"  # the shipped protocols' default: the numbers linear probes always had


def test_grid_search_is_a_recorded_protocol_override_of_linear_probes_only(tmp_path: Path, tiny_cards: Path) -> None:
    request = _request(tmp_path, tiny_cards, probes="linear,knn", grid_search="halving")
    linear, knn = request.cells(request.registry())
    assert (
        linear.probe_config.grid_search == "halving" and linear.identity(request.registry()).protocol == "dinov2-linear+grid_search=halving"
    )
    assert knn.identity(request.registry()).protocol == "aim-v1"
    [default] = _request(tmp_path, tiny_cards, probes="linear").cells(request.registry())
    assert (
        default.probe_config.grid_search == "full"
        and default.identity(request.registry()).config_hash != linear.identity(request.registry()).config_hash
    )
