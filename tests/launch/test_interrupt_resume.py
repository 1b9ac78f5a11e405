"""Work is never lost to an interruption: a cell stopped anywhere ends, run again, with the record
an uninterrupted run writes; training states are written by steps or by time, never too often;
and the interrupt message says what is on disk."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from aimbench.identity import CellIdentity
from aimbench.launch.base import Display
from aimbench.launch.local import LocalLauncher
from aimbench.launch.request import EvalRequest
from aimbench.launch.resume import resume_note
from aimbench.probes import StageCallback
from aimbench.probes.checkpoint import Checkpointing
from aimbench.probes.interrupt import request_stop

VOLATILE = {
    "record_id",
    "created_at",
    "timing",
    "wall_time_s",
    "environment",
    "record_sha256",
    "backbone_info",
}  # when, how fast, which card file


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_state_is_saved_by_steps_or_by_time_and_writes_never_dominate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    checkpoint = Checkpointing(tmp_path / "s.pt", "cell", every=200, seconds=300.0, share=0.1, clock=clock)
    checkpoint.load()  # training starts at t = 0
    clock.now = 299.0
    assert not checkpoint.due(7)  # neither 200 steps nor 5 minutes yet
    clock.now = 300.0
    assert checkpoint.due(8)  # 5 minutes of training: the first save is never held back

    def slow_write(path: Path, state: dict[str, Any]) -> None:
        clock.now += 60.0  # a one-minute write (gigabytes on a slow disk)

    monkeypatch.setattr("aimbench.probes.checkpoint.save_state", slow_write)
    checkpoint.save({"epoch": 0, "step": 8})
    clock.now += 400.0  # 400 s later: 5 minutes have passed, but writes would take 60 / 460 > 1/10
    assert not checkpoint.due(9) and not checkpoint.due(400)
    clock.now += 140.0  # 540 s = 9 x the write since it ended
    assert checkpoint.due(9)
    steps_only = Checkpointing(tmp_path / "t.pt", "cell", every=3, clock=clock)
    assert [step for step in range(1, 8) if steps_only.due(step)] == [3, 6]


SIGNALLED = """
import os, signal, sys
from pathlib import Path
import torch
from aimbench.probes.checkpoint import Checkpointing
from aimbench.probes.interrupt import Interrupted, stop_at_safe_point

path = Path(sys.argv[1])
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal: a test worker's children inherit SIGINT ignored
before = signal.getsignal(signal.SIGINT)
checkpoint = Checkpointing(path, "cell", every=1000, clock=lambda: 0.0)
try:
    with checkpoint.training():
        checkpoint.after_step(1, 10, lambda: {"epoch": 0, "step": 1})
        os.kill(os.getpid(), signal.SIGINT)  # lands mid-step: only asks
        checkpoint.after_step(2, 10, lambda: {"epoch": 0, "step": 2})
    sys.exit("no Interrupted")
except Interrupted as stopped:
    assert stopped.signum == signal.SIGINT
saved = torch.load(path, weights_only=True)
assert (saved["done"], saved["total"], saved["step"]) == (2, 10, 2), saved
assert signal.getsignal(signal.SIGINT) is before  # handlers restored
try:
    with stop_at_safe_point():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C: no waiting for a safe point
    sys.exit("no KeyboardInterrupt")
except Interrupted:
    sys.exit("the second signal waited for a safe point")
except KeyboardInterrupt:
    print("ok")
"""


def test_a_signal_while_training_saves_at_the_end_of_the_step_and_a_second_one_stops_at_once(tmp_path: Path) -> None:
    # in a process of its own: signal handlers belong to the main thread, which a test worker may not be
    proc = subprocess.run([sys.executable, "-c", SIGNALLED, str(tmp_path / "s.pt")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def _interrupt(training: bool) -> None:
    """What a Ctrl-C does, without sending one: a test worker may ignore SIGINT or run tests outside the
    main thread, so the real signal is tested above in a process of its own; here, while heads train, the
    request the deferred handler makes, elsewhere Python's KeyboardInterrupt."""
    if training:
        request_stop(signal.SIGINT, signal.default_int_handler)
    else:
        raise KeyboardInterrupt


class _Interrupting(Display):
    """A display whose stage callback sends this process SIGINT at the ``at``-th advance of the first stage named ``where``."""

    def __init__(self, where: str, at: int) -> None:
        self.where, self.at, self.sent = where, at, False

    @contextlib.contextmanager
    def cell(self, cell: CellIdentity) -> Iterator[StageCallback]:
        def stage(description: str, total: int) -> Callable[[int], None]:
            calls = [0]

            def advance(units: int) -> None:
                calls[0] += 1
                if not self.sent and self.where in description and calls[0] == self.at:
                    self.sent = True
                    _interrupt(training="heads" in description)

            return advance

        yield stage


def _request(tmp: Path, cards: Path, probe: str, results: str, cache: str, every: int) -> EvalRequest:
    request = EvalRequest.from_options("micro-cls", "digits", probe, limit=48, epochs=6, protocol="aimbench-fast", layers="all",
                                       cards=cards, results=tmp / results, cache_dir=tmp / cache, device="cpu")  # fmt: skip
    # steps only: which step saves must not depend on how fast this machine runs (the time rules have their own test)
    return replace(request, options=replace(request.options, checkpoint_every=every, checkpoint_seconds=0.0))


@pytest.fixture(autouse=True)
def _writes_never_held_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("aimbench.probes.job.WRITE_SHARE", 1.0)


def _run(request: EvalRequest, display: Display | None = None) -> tuple[CellIdentity, dict[str, Any]]:
    launcher = LocalLauncher(display)
    plan = launcher.plan(request)
    launcher.submit(plan)
    [planned] = plan.cells
    record = json.loads((request.options.results_dir / "runs").glob("*.json").__next__().read_text())
    record["probe_config"].pop("feature_cache", None)  # how many blocks came from the cache: a resumed run reuses them
    return planned.identity, {key: value for key, value in record.items() if key not in VOLATILE}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    from tests.conftest import TINY_BACKBONE_CARD, write_card

    tmp = tmp_path_factory.mktemp("uninterrupted")
    write_card(tmp / "cards", "backbones", "testfam", TINY_BACKBONE_CARD)
    return {
        probe: _run(_request(tmp, tmp / "cards", probe, f"results-{probe}", f"cache-{probe}", 200))[1] for probe in ("linear", "attentive")
    }


CASES = [  # (probe, stage, advance that sends SIGINT, checkpoint_every, what the message says was saved)
    ("linear", "features train", 1, 200, "no training state of its linear heads yet"),
    ("linear", "linear heads", 1, 200, "linear heads saved at step 2/6"),  # before any step-based checkpoint
    ("linear", "linear heads", 4, 2, "linear heads saved at step 5/6"),  # mid-training, after step-based ones
    ("linear", "linear heads", 6, 2, "linear heads saved at step 6/6"),  # after the last step: before evaluation
    ("attentive", "token maps", 1, 200, "no training state of its attentive heads yet"),
    ("attentive", "attentive heads", 1, 200, "attentive heads saved at step 2/6"),
    ("attentive", "attentive heads", 3, 2, "attentive heads saved at step 4/6"),
]


@pytest.mark.parametrize(("probe", "where", "at", "every", "note"), CASES)
def test_a_cell_interrupted_anywhere_ends_with_the_uninterrupted_record(  # noqa: PLR0913
    tmp_path: Path, tiny_cards: Path, uninterrupted: dict[str, dict[str, Any]], probe: str, where: str, at: int, every: int, note: str
) -> None:
    request = _request(tmp_path, tiny_cards, probe, "results", "cache", every)
    display = _Interrupting(where, at)
    with pytest.raises(KeyboardInterrupt):
        _run(request, display)
    assert display.sent
    identity = LocalLauncher().plan(request).cells[0].identity
    assert resume_note(request.options.results_dir, identity.stem, probe).startswith(note)
    _, record = _run(request)
    assert record == uninterrupted[probe]
    assert not list((request.options.results_dir / "state").glob("*"))  # states are dropped with the record written


@pytest.mark.parametrize(("probe", "evaluating"), [("linear", "_predict_head"), ("attentive", "head_predictions")])
def test_a_cell_interrupted_while_evaluating_ends_with_the_uninterrupted_record(
    tmp_path: Path, tiny_cards: Path, uninterrupted: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, probe: str, evaluating: str
) -> None:
    module = __import__(f"aimbench.probes.{probe}.training", fromlist=[evaluating])
    original = getattr(module, evaluating)

    def stopped(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    request = _request(tmp_path, tiny_cards, probe, "results", "cache", 4)
    monkeypatch.setattr(module, evaluating, stopped)
    with pytest.raises(KeyboardInterrupt):
        _run(request)
    identity = LocalLauncher().plan(request).cells[0].identity
    assert resume_note(request.options.results_dir, identity.stem, probe).startswith(f"{probe} heads saved at step 4/6")
    monkeypatch.setattr(module, evaluating, original)
    assert _run(request)[1] == uninterrupted[probe]
