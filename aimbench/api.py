"""``aimbench.evaluate``: the ``eval`` command as a Python call, returning what it records.

The same request, planning and run callable as ``aimbench eval`` (the local launcher): the records
it writes are the CLI's, byte for byte in content, and a second call with the same arguments
returns the stored records without running anything (``overwrite=True`` runs them again).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aimbench.identity import DEFAULT_PROTOCOL
from aimbench.launch.base import CellResult, Display
from aimbench.launch.local import LocalLauncher
from aimbench.launch.options import RunOptions
from aimbench.launch.request import EvalRequest


def evaluate(
    backbones: str | Sequence[str],
    tasks: str | Sequence[str],
    probe: str | Sequence[str] = "linear",
    *,
    layers: str | None = None,
    seeds: int | Sequence[int] = (0,),
    limit: int | None = None,
    weights: str | None = None,
    name: str | None = None,
    protocol: str = DEFAULT_PROTOCOL,
    dtype: str = "fp32",
    epochs: int | None = None,
    data_mode: str | None = None,
    grid_search: str | None = None,
    head_precision: str | None = None,
    overwrite: bool = False,
    results: str | Path = "results",
    data_root: str | Path | None = None,
    cards: Sequence[str | Path] = (),
    device: str = "auto",
    batch_size: int = 64,
    workers: int = 0,
    cache_dir: str | Path | None = None,
    memory_gb: float | None = None,
    display: Display | None = None,
) -> list[CellResult]:
    """Probe every selected layer of ``backbones`` on ``tasks``; one :class:`CellResult` per cell, in plan order.

    Arguments mean what the ``aimbench eval`` options of the same name mean (``layers`` None: each
    card's default, every block plus its published windows; ``epochs``/``data_mode``/``grid_search``/``head_precision``
    override the protocol card and are recorded as overrides). Records go to ``results/runs/`` as with the CLI.
    """
    options = RunOptions(
        Path(results), None if data_root is None else Path(data_root), tuple(Path(c) for c in cards), device, batch_size, workers,
        None if cache_dir is None else Path(cache_dir), memory_gb,
    )  # fmt: skip
    request = EvalRequest(
        backbones, tasks, probe, seeds, layers, limit, weights, name, protocol, dtype, epochs, data_mode,
        grid_search=grid_search, head_precision=head_precision, overwrite=overwrite, options=options,
    )  # fmt: skip
    launcher = LocalLauncher(display)
    return launcher.submit(launcher.plan(request)).outcomes
