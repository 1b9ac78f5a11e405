"""One cell as W processes on this machine (``aimbench eval --gpus N``): start them, watch them, stop them together.

Each rank is a fresh interpreter (multiprocessing's *spawn*: no CUDA state or open files are
inherited from this process) with the environment torchrun would give it (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR=127.0.0.1 and a port free on this machine, one per cell), so the callable
it runs (``run_cell``) finds its world with ``aimbench.distributed.world_from_env`` exactly as
under torchrun or Slurm. The ranks' stderr is this process's, so their warnings and tracebacks are
seen; rank 0's progress stages come back over a queue to this process's display.

A rank that fails would leave the others waiting in a collective forever, so the first non-zero
exit stops the rest and becomes one error line naming the rank and what it died of. Ctrl-C reaches
the ranks from the terminal (one process group); they stop at a safe point, and any still running
after a grace period are terminated.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any, TypeVar

from aimbench.errors import UserError
from aimbench.probes import Interrupted, StageCallback, no_progress

T = TypeVar("T")
GRACE_S = 10.0  # after Ctrl-C or a failure: how long ranks get to stop on their own before SIGTERM
TERM_S = 30.0  # after SIGTERM (a rank saving its state at a safe point): how long before SIGKILL
POLL_S = 0.2


def free_port() -> int:
    """A TCP port nobody listens on now: the rendezvous of one cell's ranks (a new one per cell)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rank_environment(rank: int, world: int, port: int) -> dict[str, str]:
    """What torchrun sets for one rank on one machine (``aimbench.distributed.world_from_env`` reads it)."""
    return {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}  # fmt: skip


class _QueueStage:
    """Rank 0's stage callback: each stage and advance goes to the launching process's display."""

    def __init__(self, events: Any) -> None:
        self.events, self.count = events, 0

    def __call__(self, description: str, total: int) -> Callable[[int], None]:
        number, self.count = self.count, self.count + 1
        self.events.put(("stage", number, description, total))
        return lambda amount: self.events.put(("advance", number, amount))


def last_line(error: BaseException) -> str:
    """One line for a rank's error: a UserError's own text, else ``Type: message``."""
    if isinstance(error, UserError):
        return str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    text = "".join(traceback.format_exception_only(type(error), error)).strip()
    return text.splitlines()[-1] if text else type(error).__name__


def _rank_main(target: Callable[..., Any], args: tuple[Any, ...], rank: int, world: int, port: int, events: Any) -> None:
    """In the rank's process: its environment, then ``target(*args, stage)``; the outcome goes to ``events``."""
    os.environ.update(rank_environment(rank, world, port))
    if "OMP_NUM_THREADS" not in os.environ:  # as torchrun does: W ranks on one CPU would otherwise each take every core
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    stage: StageCallback = _QueueStage(events) if rank == 0 else no_progress
    try:
        result = target(*args, stage)
    except BaseException as error:  # noqa: B036  (a Ctrl-C too: the launcher must learn why this rank ended)
        events.put(("error", rank, last_line(error)))
        if not isinstance(error, (UserError, KeyboardInterrupt)):
            traceback.print_exc()  # the whole story on this rank's stderr; the launcher prints one line
        events.close()
        events.join_thread()
        raise SystemExit(1) from None
    events.put(("done", rank, result))
    events.close()
    events.join_thread()


def run_ranks(target: Callable[..., T], args: tuple[Any, ...], world: int, stage: StageCallback = no_progress) -> T:
    """Run ``target(*args, stage)`` in ``world`` processes that form one torch.distributed world; returns rank 0's
    result. ``target`` and ``args`` must pickle (a module-level function, plain data). Raises one-line
    ``UserError`` when a rank fails; the others are stopped first."""
    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    port = free_port()
    processes = [context.Process(target=_rank_main, args=(target, args, rank, world, port, events), name=f"aimbench-rank-{rank}")
                 for rank in range(world)]  # fmt: skip
    for process in processes:
        process.start()
    watcher = _Watcher(processes, events, stage)
    try:
        with _sigterm_interrupts():
            return watcher.wait()
    except BaseException as stopped:
        # Ctrl-C reached the ranks from the terminal: let them save and end; a SIGTERM came to this process only: pass it on now
        stop_all(processes, grace_s=0.0 if getattr(stopped, "signum", None) == signal.SIGTERM else GRACE_S)
        raise
    finally:
        events.close()


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM to this process (a scheduler, ``kill``) interrupts the wait as Ctrl-C does, instead of
    ending this process at once and leaving its ranks running unwatched (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, _: FrameType | None) -> None:
        raise Interrupted(signum, previous)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Watcher:
    """Relays rank 0's progress and notices the first rank that ends badly."""

    def __init__(self, processes: Sequence[BaseProcess], events: Any, stage: StageCallback) -> None:
        self.processes, self.events, self.stage = processes, events, stage
        self.advances: dict[int, Callable[[int], None]] = {}
        self.errors: dict[int, str] = {}
        self.results: dict[int, Any] = {}

    def _drain(self, block: bool) -> None:
        while True:
            try:
                event = self.events.get(timeout=POLL_S) if block else self.events.get_nowait()
            except queue.Empty:
                return
            block = False
            kind, number, *rest = event
            if kind == "stage":
                self.advances[number] = self.stage(*rest)
            elif kind == "advance" and number in self.advances:
                self.advances[number](*rest)
            elif kind == "error":
                self.errors.setdefault(number, rest[0])
            elif kind == "done":
                self.results[number] = rest[0]

    def wait(self) -> Any:
        world = len(self.processes)
        while True:
            self._drain(block=True)
            codes = [process.exitcode for process in self.processes]
            failed = [rank for rank, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                # the others may wait in a collective for the failed one: never let them hang
                stop_all(self.processes, grace_s=0.5, term_s=5.0)
                self._drain(block=False)
                rank = min(failed, key=lambda r: (r not in self.errors, r))  # a rank that said why, else the first
                why = self.errors.get(rank) or _exit_reason(codes[rank])
                raise UserError(f"rank {rank} of {world} failed: {why}")
            if all(code == 0 for code in codes):
                self._drain(block=False)
                if 0 not in self.results:
                    raise UserError(f"rank 0 of {world} ended without a result")
                return self.results[0]


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}" if -code in signal.valid_signals() else f"killed by signal {-code}"
    return f"exit status {code}"


def stop_all(processes: Sequence[BaseProcess], grace_s: float, term_s: float = TERM_S) -> None:
    """Let running ranks end on their own for ``grace_s`` (a Ctrl-C reached them too), then SIGTERM
    (a rank saves its state at a safe point) and ``term_s`` more, then SIGKILL whatever is left."""
    for wait_s, stop in ((grace_s, BaseProcess.terminate), (term_s, BaseProcess.kill), (term_s, None)):
        deadline = time.monotonic() + wait_s
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        alive = [process for process in processes if process.is_alive()]
        if not alive or stop is None:
            return
        for process in alive:
            stop(process)
