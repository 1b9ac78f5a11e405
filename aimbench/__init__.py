"""aimbench: layer-wise frozen-backbone probing with the AIM paper's protocol.

The public Python API is small and lives here (the CLI, ``aimbench``, drives everything else):

- :func:`list_backbones` names the known backbone variants (the cards), optionally filtered;
- :func:`load_backbone` builds one, frozen, behind the shared contract :class:`Backbone`;
- :meth:`Backbone.forward_layers` returns the tokens of any blocks (``[-1, 0]``, ``"last"``,
  ``"all"``) from one forward pass, as :class:`LayerTokens` by block in the order asked (``out[-1]``
  and ``out[depth - 1]`` alike), for a preprocessed tensor or PIL images;
- :func:`evaluate` runs ``aimbench eval`` as a call and returns one :class:`CellResult` per cell
  (the record the CLI writes, and its probe result typed).

``import aimbench`` stays light (no torch): the classes that need torch are imported the first
time they are used, through the module ``__getattr__`` below.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aimbench.version import __version__

if TYPE_CHECKING:
    from aimbench.adapters.base import Backbone, LayerTokens
    from aimbench.api import CellResult, evaluate

# Public names imported on first use (they import torch, or the launchers): name -> defining module.
_LAZY = {
    "Backbone": "aimbench.adapters.base",
    "LayerTokens": "aimbench.adapters.base",
    "evaluate": "aimbench.api",
    "CellResult": "aimbench.api",
}


def load_backbone(name: str, weights: str | None = None, **kwargs: Any) -> Backbone:
    """Build a backbone variant by card name, frozen and in eval mode.

    ``weights`` overrides the card's source (``random``, ``timm``, a file, ``hf:...``); further
    keywords (``dtype``, ``cards``) as in :func:`aimbench.adapters.load_backbone`.
    """
    from aimbench.adapters import load_backbone as _load

    return _load(name, weights=weights, **kwargs)


def list_backbones(pattern: str | None = None, cards: Sequence[Path] = ()) -> list[str]:
    """Names of the known backbone variants, sorted, as ``aimbench ls backbones [PATTERN]`` lists them.

    ``pattern`` is a glob (``"dinov2-*"``) or, without wildcards, a substring (``"tiny"``);
    ``cards`` adds user card directories to the shipped ones.
    """
    from aimbench.cards.registry import Registry

    names = sorted(Registry.load(cards).backbones)
    if not pattern:
        return names
    if any(c in pattern for c in "*?["):
        return [name for name in names if fnmatch.fnmatchcase(name, pattern)]
    return [name for name in names if pattern in name]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this hook
        return value
    raise AttributeError(f"module 'aimbench' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = ["__version__", "Backbone", "CellResult", "LayerTokens", "evaluate", "list_backbones", "load_backbone"]
