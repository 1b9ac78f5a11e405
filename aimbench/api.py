"""``aimbench.evaluate``: the ``eval`` command as a Python call, returning what it records.

The same request, planning and run callable as ``aimbench eval`` (the local launcher): the records
it writes are the CLI's, byte for byte in content, and a second call with the same arguments
returns the stored records without running anything (``overwrite=True`` runs them again).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aimbench.cards.backbone_card import Preprocess
from aimbench.errors import UserError
from aimbench.launch.base import CellResult, Display
from aimbench.launch.local import LocalLauncher
from aimbench.launch.request import EvalRequest, PathLike, Seeds
from aimbench.names import split_names

if TYPE_CHECKING:
    from torch import nn

    from aimbench.adapters.base import Backbone


def evaluate(
    backbones: str | Sequence[str] | None = None,
    tasks: str | Sequence[str] = (),
    probe: str | Sequence[str] = "linear",
    *,
    model: nn.Module | None = None,
    transform: Preprocess | Mapping[str, Any] | None = None,
    layers: str | Sequence[int | str] | None = None,
    seed: Seeds | None = None,
    seeds: int | None = None,
    limit: int | None = None,
    weights: str | None = None,
    name: str | None = None,
    protocol: str | None = None,
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

    An in-memory model instead of a card: ``model`` is a timm ViT-like module or any module with
    ``forward_blocks`` (``aimbench.adapters.module_family.BlockTokensModule``), ``transform`` its
    eval preprocessing (a ``Preprocess`` or a mapping of its fields: ``image_size``, ``mean``,
    ``std``, ...; a timm model fills in what it knows), and ``backbones`` the one name records and
    reports call it (default: its class name). Its weights are identified by the SHA-256 of its state
    dict, so the same weights are found and skipped the second time; it is cast to ``dtype`` in place.
    """
    modules: tuple[Backbone, ...] = ()
    if model is not None:
        wrapped = _wrap(model, backbones, transform, weights, dtype)
        backbones, modules = wrapped.spec.name, (wrapped,)
    elif transform is not None:
        raise UserError("transform= is the preprocessing of an in-memory model=; a card's backbone has its own")
    if backbones is None:
        raise UserError("name the backbones to evaluate (card names), or pass an in-memory model=")
    request = EvalRequest.from_options(
        backbones, tasks, probe, modules=modules, seed=seed, seeds=seeds, layers=layers, limit=limit, weights=weights, name=name,
        protocol=protocol, dtype=dtype, epochs=epochs, data_mode=data_mode, grid_search=grid_search,
        head_precision=head_precision, overwrite=overwrite, results=results, data_root=data_root, cards=cards,
        device=device, batch_size=batch_size, workers=workers, cache_dir=cache_dir, memory_gb=memory_gb,
    )  # fmt: skip
    launcher = LocalLauncher(display)
    return launcher.submit(launcher.plan(request)).outcomes


def _wrap(
    model: nn.Module, name: str | Sequence[str] | None, transform: Preprocess | Mapping[str, Any] | None, weights: str | None, dtype: str
) -> Backbone:
    """``model`` as a backbone named ``name`` (one name; default: its class name, lower-cased)."""
    from aimbench.adapters.module_family import backbone_from_module

    if weights is not None:
        raise UserError("weights= overrides a card's weights; an in-memory model= brings its own")
    names = split_names(name) if name is not None else (type(model).__name__.lower(),)
    if len(names) != 1:
        raise UserError(f"an in-memory model= takes one name in backbones=, got {list(names)}")
    return backbone_from_module(model, name=names[0], transform=transform, dtype=dtype)
