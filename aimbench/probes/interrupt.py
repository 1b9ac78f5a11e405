"""Stopping probe training at a safe point: a signal asks, the training loop saves, then stops.

A Ctrl-C (SIGINT), a SIGTERM or Slurm's pre-emption signal (submitit's ``$SUBMITIT_PREEMPT_SIGNAL``,
USR2 by default) that arrives while heads train would otherwise land mid-step and lose every step
since the last checkpoint. While :func:`stop_at_safe_point` is active, the first such signal only
raises a flag; :class:`~aimbench.probes.checkpoint.Checkpointing` checks it after each optimizer
step, saves a resumable state and raises :class:`Interrupted` (signals of other kinds that arrive
meanwhile wait with it, and are handed on after it). The same signal again does what the
signal did before (a second Ctrl-C: KeyboardInterrupt at once), so a user is never held hostage by
a slow save. Handlers can only be installed in the main thread: elsewhere (a training run in a
worker thread) nothing changes and signals keep their usual effect.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def watched_signals() -> list[signal.Signals]:
    """SIGINT, SIGTERM and the pre-emption signal submitit asks Slurm for (USR2 unless overridden)."""
    names = ["SIGINT", "SIGTERM", "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")]
    return list(dict.fromkeys(getattr(signal, name) for name in names if hasattr(signal, name)))


class Interrupted(KeyboardInterrupt):
    """Training stopped on ``signum`` after saving its state. A KeyboardInterrupt, so every caller
    that handles Ctrl-C handles it; ``previous`` is the handler the signal had before training, so a
    caller can hand the signal on (submitit's requeue, for the pre-emption signal)."""

    def __init__(self, signum: int, previous: Handler, later: tuple[tuple[int, Handler], ...] = ()) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum, self.previous, self.later = signum, previous, later

    @classmethod
    def requested(cls) -> Interrupted:
        """The stop the signals received while deferring asked for: the first, and the other kinds after it."""
        (signum, previous), *later = _requested
        return cls(signum, previous, tuple(later))

    def forward(self) -> None:
        """Run the handlers the signals had before training, in the order they came (submitit: SIGTERM
        is logged, the pre-emption signal checkpoints, requeues and exits); no-op for defaults."""
        for signum, previous in ((self.signum, self.previous), *self.later):
            if callable(previous) and previous is not signal.default_int_handler:
                previous(signum, None)


_requested: list[tuple[int, Handler]] = []  # each kind of signal received while deferring, in order, and its previous handler


def stop_requested() -> tuple[int, Handler] | None:
    """The signal that asked training to stop (and its previous handler), if one did."""
    return _requested[0] if _requested else None


def request_stop(signum: int, previous: Handler = None) -> None:
    """Ask the running training to stop at its next safe point, as a signal does (tests call it from a callback)."""
    if all(asked != signum for asked, _ in _requested):
        _requested.append((signum, previous))


def _pass_on(signum: int, frame: FrameType | None, previous: Handler) -> None:
    """Do what ``signum`` did before we deferred it: call its handler, or the default action."""
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


@contextmanager
def stop_at_safe_point() -> Iterator[None]:
    """Defer SIGINT, SIGTERM and the pre-emption signal to the end of the current optimizer step
    while the block runs (main thread only); the previous handlers are restored afterwards."""
    previous: dict[int, Handler] = {}

    def deferred(signum: int, frame: FrameType | None) -> None:
        if any(asked == signum for asked, _ in _requested):  # the same signal again (a second Ctrl-C): no more waiting
            _pass_on(signum, frame, previous.get(signum))
            return
        # another kind (a pre-emption sends SIGTERM, then USR2) waits too: acting on it now would cut the save
        # the first one asked for (and, over several ranks, leave one rank's state a step behind the others')
        request_stop(signum, previous.get(signum))

    _requested.clear()
    # handlers can only be installed from the main thread; elsewhere signals keep their usual effect, and only a
    # request_stop made in this process (a test's callback, another thread) stops training at a safe point
    main = threading.current_thread() is threading.main_thread()
    for signum in watched_signals() if main else ():
        if signal.getsignal(signum) == signal.SIG_IGN:  # a shell's background job ignores SIGINT: keep it so
            continue
        previous[signum] = signal.signal(signum, deferred)
    pending: list[tuple[int, Handler]] = []
    try:
        yield
        pending = list(_requested)  # arrived after the last step's check: they still take effect
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        _requested.clear()
    for number, handler in pending:
        _pass_on(number, None, handler)
