"""Resumable probe training state: written atomically, read without executing pickled code.

A state file holds the heads, optimizer and schedule state, and the data position (epoch, step
within the epoch). It is written to a hidden ``.part`` file, fsynced and renamed, so a job killed
mid-write leaves the previous state intact. The state carries the identity of the run it belongs
to; a state from another configuration is ignored, never half-applied. It also carries the
checksum of its content: a state damaged after it was written (one flipped value would change one
head) is never resumed; training starts again from the beginning, with a one-line warning, and
ends with the numbers an uninterrupted run gives.
"""

from __future__ import annotations

import pickle
import signal
import sys
import time
import zipfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from aimbench.atomic import atomic_write
from aimbench.checksum import seal, unseal
from aimbench.probes.interrupt import Interrupted, stop_at_safe_point, stop_requested


def save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda handle: torch.save(seal(state), handle))


def load_state(path: Path | None, identity: str) -> dict[str, Any] | None:
    """The saved state of the run ``identity``, or None (no file, another run's, or damaged: then with a warning)."""
    if path is None or not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError, ValueError):
        saved = None
    state = unseal(saved) if isinstance(saved, dict) else None
    if state is None:
        print(
            f"warning: training state {path} cannot be read or failed its checksum (damaged after it was written); "
            "training this probe again from the start",
            file=sys.stderr,
            flush=True,
        )
        return None
    return state if state.get("identity") == identity else None


@dataclass(frozen=True)
class Checkpointing:
    """Where a training run keeps its resumable state, whose run it is, and when it saves.

    A state is written after an optimizer step when EITHER the step count is a multiple of
    ``every`` OR ``seconds`` of training have passed since the previous save (or since training
    started): a cell of 100 slow steps still leaves a state every few minutes, and a stop at the
    next step (a signal, see :mod:`aimbench.probes.interrupt`) always saves. Not at each epoch's
    end: with small splits an epoch is a step or two.

    The bound: a state can be gigabytes at ImageNet shape, so a save is held back while the time
    since the previous one is under ``min_seconds`` or under ``(1 - share) / share`` times what
    writing the previous one took, so writes take at most ``share`` (default a tenth) of training
    time however slow the disk; the first save is never held back, nor a save before a stop. So a
    state is at most ``max(seconds, 9 x its write time)`` of training old. How often is not part of
    a cell's identity: saving never changes the numbers (a resumed run sees the same batches and
    the same random state). ``clock`` is injectable so tests never depend on wall-clock time.
    """

    path: Path
    identity: str
    every: int = 200
    seconds: float = 0.0  # also save once this long has passed since the previous save (0: steps only)
    min_seconds: float = 0.0  # and never two saves closer than this (the first is never held back)
    share: float = 1.0  # most of the training time writes may take (1: no limit)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)
    # with several ranks: (stop asked here, save due here) -> the same flags, true where true on any rank
    agree: Callable[[list[bool]], list[bool]] | None = field(default=None, repr=False, compare=False)
    # with several ranks: this rank's resume position -> whether every rank's is the same
    same_position: Callable[[int], bool] | None = field(default=None, repr=False, compare=False)
    _times: dict[str, float] = field(default_factory=dict, repr=False, compare=False)  # "start", "saved", "write"

    def load(self) -> dict[str, Any] | None:
        """The saved state of this run, if any; says so on stderr, so a log shows where a requeued job resumed."""
        self._times.setdefault("start", self.clock())
        state = load_state(self.path, self.identity)
        if self.same_position is not None and not self.same_position(-1 if state is None else int(state.get("done", -1))):
            # a rank killed mid-save (a second signal) keeps an older state than the others: resuming both would
            # leave the ranks steps apart, each waiting for the other, so all of them train again from the start
            print(f"warning: the ranks' training states ({self.path.name} and its siblings) are from different steps; "
                  "training this probe again from the start", file=sys.stderr, flush=True)  # fmt: skip
            state = None
        if state is not None:
            print(f"resuming {self.path.name} at epoch {state.get('epoch')}, step {state.get('step')}", file=sys.stderr, flush=True)
        return state

    def save(self, state: dict[str, Any]) -> None:
        began = self.clock()
        save_state(self.path, {**state, "identity": self.identity})
        ended = self.clock()
        self._times.update(saved=ended, write=ended - began)

    def due(self, steps_done: int) -> bool:
        """At every ``every``-th step, or once ``seconds`` have passed since the previous save, unless
        that save is too recent (``min_seconds``, ``share``); the first save is never held back."""
        now = self.clock()
        since = now - self._times.get("saved", self._times.setdefault("start", now))
        if steps_done % self.every and not (self.seconds > 0 and since >= self.seconds):
            return False
        if "saved" not in self._times:
            return True
        floor = max(self.min_seconds, self._times["write"] * (1 - self.share) / self.share)
        return since >= floor

    def after_step(self, steps_done: int, total: int, state: Callable[[], dict[str, Any]]) -> None:
        """Called after each optimizer step: save ``state()`` when :meth:`due`; when a signal asked
        training to stop, save (never held back) and raise :class:`~aimbench.probes.interrupt.Interrupted`.
        With ``agree`` (several ranks), either happens on every rank when it is asked on one."""
        stop = stop_requested()
        stopping, due = stop is not None, self.due(steps_done)
        if self.agree is not None:  # every rank saves at the same step and stops at the same step, so none waits for another
            stopping, due = self.agree([stopping, due])
        if stopping or due:
            self.save({**state(), "done": steps_done, "total": total})
        if stopping:
            if self.agree is not None:  # every rank's state is on disk before any hands the signal on (rank 0 requeues the job)
                self.agree([True])
            raise Interrupted.requested() if stop is not None else Interrupted(signal.SIGTERM, None)  # another rank was signalled

    def training(self) -> AbstractContextManager[None]:
        """Wrap a training loop: signals stop it at the end of a step, with its state saved."""
        return stop_at_safe_point()
