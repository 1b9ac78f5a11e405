"""``aimbench.evaluate``: the ``eval`` command as a Python call, returning what it records.

The same request, planning and run callable as ``aimbench eval`` (the local launcher): the records
it writes are the CLI's, byte for byte in content, and a second call with the same arguments
returns the stored records without running anything (``overwrite=True`` runs them again).
"""

from __future__ import annotations

from collections.abc import Sequence

from aimbench.identity import DEFAULT_PROTOCOL
from aimbench.launch.base import CellResult, Display
from aimbench.launch.local import LocalLauncher
from aimbench.launch.request import EvalRequest, PathLike, Seeds


def evaluate(
    backbones: str | Sequence[str],
    tasks: str | Sequence[str],
    probe: str | Sequence[str] = "linear",
    *,
    layers: str | Sequence[int | str] | None = None,
    seed: Seeds | None = None,
    seeds: int | None = None,
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
    results: PathLike = "results",
    data_root: PathLike | None = None,
    cards: PathLike | Sequence[PathLike] = (),
    device: str = "auto",
    batch_size: int = 64,
    workers: int = 0,
    cache_dir: PathLike | None = None,
    memory_gb: float | None = None,
    display: Display | None = None,
) -> list[CellResult]:
    """Probe every selected layer of ``backbones`` on ``tasks``; one :class:`CellResult` per cell, in plan order.

    Arguments mean what the ``aimbench eval`` options of the same name mean, read by the same
    :meth:`EvalRequest.from_options`: ``backbones``, ``tasks`` and ``probe`` are comma-separated
    strings or sequences of names; ``layers`` None is each card's default (every block plus its
    published windows), else a ``--layers`` string or a sequence of its items (``[0, -1]``);
    ``epochs``/``data_mode``/``grid_search``/``head_precision`` override the protocol card and are
    recorded as overrides. Records go to ``results/runs/`` as with the CLI.

    Seeds, as on the command line: ``seed`` names the seeds to run (``seed=3`` is seed 3 only,
    ``seed=[0, 1]`` or ``seed="0,1"`` those two), ``seeds=N`` runs seeds 0..N-1 (``seeds=3`` is
    0, 1 and 2); give one or the other; neither runs seed 0. Each seed is its own cell.
    """
    request = EvalRequest.from_options(
        backbones, tasks, probe, seed=seed, seeds=seeds, layers=layers, limit=limit, weights=weights, name=name,
        protocol=protocol, dtype=dtype, epochs=epochs, data_mode=data_mode, grid_search=grid_search,
        head_precision=head_precision, overwrite=overwrite, results=results, data_root=data_root, cards=cards,
        device=device, batch_size=batch_size, workers=workers, cache_dir=cache_dir, memory_gb=memory_gb,
    )  # fmt: skip
    launcher = LocalLauncher(display)
    return launcher.submit(launcher.plan(request)).outcomes
