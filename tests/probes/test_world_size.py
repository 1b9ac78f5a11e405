"""One cell on two ranks (two gloo processes on CPU) gives exactly the numbers one rank gives.

Each probe kind's cell is planned once, run alone and run as a world of two, and the two records
compared: every head's val score, every layer set's selected head and test score. The numbers must
be equal, not close: ranks own whole layer sets and forward fixed chunks of images
(``aimbench.probes.ownership``), so no number may depend on the world size.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch.multiprocessing

from aimbench.cards.registry import Registry
from aimbench.launch.base import PlannedCell
from aimbench.launch.local import LocalLauncher
from aimbench.launch.options import RunOptions
from aimbench.launch.request import EvalRequest
from aimbench.launch.run_cell import run_cell
from aimbench.launch.spawn import free_port

LAYERS = {"knn": "0,1,2,avg:1-2"}  # an even split too


def _rank(rank: int, port: int, planned: PlannedCell, options: RunOptions) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    run_cell(planned, options)


def _numbers(path: Path) -> dict[str, Any]:
    record = json.loads(path.read_text())
    return {
        "heads": [(h["layer_set"], h["token"], h["hparams"], h["val_score"]) for h in record["heads"]],
        "layers": [(layer["layer_set"], layer["hparams"], layer["val_score"], layer["test_score"]) for layer in record["layers"]],
        # every test example's prediction travels back from the rank that owns its layer set: the same sidecar, the same intervals
        "predictions": (record["predictions"]["sha256"], [layer["test_interval"] for layer in record["layers"]]),
    }


def _both_ways(
    tmp_path: Path, cards: Path, probe: str, micro_batch: int | None = None, **overrides: Any
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(alone, two ranks, the two-rank record's environment) of one planned cell: 3 layer sets (one
    rank owns two, the other one) and 36 train images in forwards of 16 (one rank forwards 32 of a
    batch, the other 4): the exchange between unequal shares. ``micro_batch``: the attentive heads'
    (a memory setting, outside the identity), so the owners receive a batch in windows of rows."""
    request = EvalRequest.from_options(
        "micro-cls", "digits", probe, limit=48, layers=LAYERS.get(probe, "0,1,2"), cards=cards, batch_size=16, **overrides
    )
    planned = LocalLauncher().plan(request).cells[0]
    if micro_batch is not None:
        planned = replace(planned, cell=replace(planned.cell, probe_config=replace(planned.cell.probe_config, micro_batch=micro_batch)))
    alone = replace(request.options, results_dir=tmp_path / "alone", cache_dir=tmp_path / "cache-alone")
    two = replace(request.options, results_dir=tmp_path / "two", cache_dir=tmp_path / "cache-two")
    registry = Registry.load([cards])
    first = run_cell(planned, alone, registry=registry)
    torch.multiprocessing.spawn(_rank, args=(free_port(), planned, two), nprocs=2, join=True)
    second = two.results_dir / first.relative_to(alone.results_dir)
    assert not list((two.results_dir / "state").glob("*.pt")), "the two ranks' resume states are cleared with the record"
    if micro_batch is not None:  # the planned change reached the heads
        assert json.loads(second.read_text())["probe_config"]["micro_batch"] == micro_batch
    return _numbers(first), _numbers(second), json.loads(second.read_text())["environment"]


@pytest.mark.parametrize(
    ("probe", "overrides"),
    [
        ("linear", {"protocol": "aim-v1", "epochs": 3}),  # cached features, AdamW grid
        ("knn", {}),
        ("linear", {"protocol": "aimbench-fast", "epochs": 1, "data_mode": "online"}),  # augmented views, exchanged per step
        ("attentive", {"protocol": "aimbench-fast", "epochs": 2, "data_mode": "online"}),  # token maps exchanged per step
        # windows of 12 rows: 0-11 and 12-23 on rank 0, 24-35 across both ranks' rows (32 and 4)
        ("attentive", {"protocol": "aimbench-fast", "epochs": 2, "data_mode": "online", "micro_batch": 12}),
        ("attentive", {"protocol": "aimbench-fast", "epochs": 2, "data_mode": "cached"}),
    ],
    ids=["linear-cached", "knn", "linear-online", "attentive-online", "attentive-online-windows", "attentive-cached"],
)
def test_a_cell_on_two_ranks_gives_exactly_the_numbers_of_one(tmp_path: Path, tiny_cards: Path, probe: str, overrides: dict) -> None:
    alone, two, environment = _both_ways(tmp_path, tiny_cards, probe, **overrides)
    assert two == alone
    assert environment["world_size"] == 2


def _stopping_rank(rank: int, port: int, planned: PlannedCell, options: RunOptions) -> None:
    """A rank of two whose main rank asks training to stop at the second step of the heads (as a
    signal to that rank alone would): both ranks must save and stop at the same step."""
    from aimbench.probes.interrupt import request_stop

    def stage(description: str, total: int) -> Any:
        def advance(units: int) -> None:
            if "heads" in description:
                request_stop(signal.SIGTERM)

        return advance

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    run_cell(planned, options, stage)


@pytest.mark.timeout(600)  # ranks resumed at different steps would wait for each other forever
@pytest.mark.parametrize("one_state_lost", [False, True], ids=["both-states", "one-rank-killed-mid-save"])
def test_a_two_rank_cell_stopped_mid_training_resumes_to_the_numbers_of_one_rank(
    tmp_path: Path, tiny_cards: Path, one_state_lost: bool
) -> None:
    """Stopped, then run again: from both ranks' states; or, where one rank lost its last save (killed
    while writing it, as a second signal does), from the start on every rank, never from two steps."""
    request = EvalRequest.from_options("micro-cls", "digits", "attentive", limit=48, layers="0,1,2,avg:1-2", cards=tiny_cards,
                                       batch_size=16, protocol="aimbench-fast", epochs=3, data_mode="online")  # fmt: skip
    planned = LocalLauncher().plan(request).cells[0]
    alone = replace(request.options, results_dir=tmp_path / "alone", cache_dir=tmp_path / "cache")
    two = replace(
        request.options, results_dir=tmp_path / "two", cache_dir=tmp_path / "cache", checkpoint_every=1000, checkpoint_seconds=0.0
    )
    first = run_cell(planned, alone, registry=Registry.load([tiny_cards]))
    torch.multiprocessing.spawn(_stopping_rank, args=(free_port(), planned, two), nprocs=2, join=True)  # spawn swallows the stop
    assert not (two.results_dir / "runs").exists() or not list((two.results_dir / "runs").glob("*.json")), "a stopped cell writes no record"
    states = sorted(path.name for path in (two.results_dir / "state").glob("*.pt"))
    assert states == [f"{planned.identity.stem}.rank{r}of2.pass0.pt" for r in (0, 1)]  # each rank saved its own heads
    if one_state_lost:
        (two.results_dir / "state" / states[1]).unlink()
    torch.multiprocessing.spawn(_rank, args=(free_port(), planned, two), nprocs=2, join=True)
    assert _numbers(two.results_dir / first.relative_to(alone.results_dir)) == _numbers(first)
