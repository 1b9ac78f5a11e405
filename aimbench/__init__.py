"""aimbench: layer-wise frozen-backbone probing with the AIM paper's protocol.

The public Python API is small: :func:`load_backbone` returns a frozen backbone behind the
shared contract, and the CLI (``aimbench``) drives everything else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aimbench.version import __version__

if TYPE_CHECKING:
    from aimbench.adapters import Backbone


def load_backbone(name: str, weights: str | None = None, **kwargs: Any) -> Backbone:
    """Build a backbone variant by card name; see :func:`aimbench.adapters.load_backbone`."""
    from aimbench.adapters import load_backbone as _load

    return _load(name, weights=weights, **kwargs)


__all__ = ["__version__", "load_backbone"]
