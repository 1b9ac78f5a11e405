"""Probe training states: resumed only when whole and of the same run; damage never changes a head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aimbench.probes.checkpoint import Checkpointing, load_state, save_state


def _state() -> dict[str, object]:
    return {"identity": "cell-a", "epoch": 3, "step": 7, "heads": {"weight": torch.arange(12.0).reshape(3, 4)}}


def test_a_whole_state_of_the_same_run_is_resumed_and_another_runs_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    save_state(path, _state())
    state = load_state(path, "cell-a")
    assert state is not None and state["epoch"] == 3 and torch.equal(state["heads"]["weight"], _state()["heads"]["weight"])
    assert load_state(path, "cell-b") is None
    assert load_state(tmp_path / "missing.pt", "cell-a") is None


def test_one_changed_value_in_a_saved_state_is_never_resumed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "state.pt"
    save_state(path, _state())
    saved = torch.load(path, weights_only=True)
    saved["heads"]["weight"][1, 2] += 1e-3  # one head's weight changed after the state was written
    torch.save(saved, path)
    assert load_state(path, "cell-a") is None
    [warning] = capsys.readouterr().err.splitlines()
    assert warning.startswith(f"warning: training state {path} ") and "from the start" in warning


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: bytes(len(b)), lambda b: b"not a state"])
def test_a_torn_or_foreign_state_file_starts_training_again(tmp_path: Path, capsys: pytest.CaptureFixture[str], damage) -> None:  # type: ignore[no-untyped-def]
    checkpoint = Checkpointing(tmp_path / "state.pt", "cell-a")
    checkpoint.save(_state())
    checkpoint.path.write_bytes(damage(checkpoint.path.read_bytes()))
    assert checkpoint.load() is None
    assert "warning: training state" in capsys.readouterr().err


def test_checkpoints_fall_on_every_nth_step_and_never_closer_than_min_seconds(tmp_path: Path) -> None:
    often = Checkpointing(tmp_path / "a.pt", "cell", every=2)
    assert [step for step in range(1, 7) if often.due(step)] == [2, 4, 6]  # not at epoch ends: a tiny epoch is one step
    held = Checkpointing(tmp_path / "b.pt", "cell", every=2, min_seconds=1e9)
    assert held.due(2)  # the first save is never held back (a preempted job must find one)
    held.save(_state())
    assert not held.due(4) and not held.due(6)
