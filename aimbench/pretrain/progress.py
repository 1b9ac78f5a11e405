"""The rich progress line a pre-training run shows: step, loss, lr, gradient norm, throughput, MFU on GPU."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from aimbench.pretrain.trainer import StepMetrics


@contextmanager
def watch(console: Console, steps: int, enabled: bool = True, label: str = "pretrain") -> Iterator[Callable[[StepMetrics], None]]:
    """A live progress bar over ``steps``; yields the ``on_step`` callback that ``train`` calls after each step."""
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                        TextColumn("{task.fields[stats]}"), console=console, disable=not enabled)  # fmt: skip
    with progress:
        bar = progress.add_task(label, total=steps, stats="")

        def show(m: StepMetrics) -> None:
            mfu = f" mfu {100 * m.mfu:.0f}%" if m.mfu is not None else ""
            stats = f"loss {m.loss:.4f} lr {m.lr:.2e} |g| {m.grad_norm:.2f} {m.images_per_s:.0f} img/s {m.tokens_per_s:.0f} tok/s{mfu}"
            progress.update(bar, completed=m.step + 1, stats=stats)

        yield show
