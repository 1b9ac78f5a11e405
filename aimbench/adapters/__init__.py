"""Backbone families behind one contract (``base``); :func:`load_backbone` builds one by name, and
``module_family.backbone_from_module`` wraps a model object that has no card."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aimbench.cards.backbone_card import BackboneSpec
from aimbench.cards.registry import Registry
from aimbench.errors import UserError

if TYPE_CHECKING:
    from aimbench.adapters.base import Backbone

# A family's class as build_backbone calls it: (spec, weights override, dtype) -> a built backbone.
FamilyClass = Callable[[BackboneSpec, "str | None", str], "Backbone"]


def load_backbone(
    name: str,
    weights: str | None = None,
    cards: Sequence[Path] = (),
    registry: Registry | None = None,
    dtype: str = "fp32",
) -> Backbone:
    """Build the named backbone variant, frozen and in eval mode.

    ``weights`` overrides the card's source: ``random``, ``timm`` (timm family),
    ``open_clip:<tag>`` (open_clip family), a local file path, ``hf:<owner>/<repo>/<file>`` or an
    ``https://`` URL;
    ``dtype`` is one of ``aimbench.dtypes.DTYPES``.
    """
    return build_backbone((registry or Registry.load(cards)).backbone(name), weights, dtype)


def _timm() -> FamilyClass:
    from aimbench.adapters.timm_family import TimmBackbone

    return TimmBackbone


def _aim() -> FamilyClass:
    from aimbench.adapters.aim_family import AimBackbone

    return AimBackbone


def _open_clip() -> FamilyClass:
    from aimbench.adapters.open_clip_family import OpenClipBackbone

    return OpenClipBackbone


# A card's ``adapter`` -> its family's class, imported when first built (each imports its own library).
# A new family: its module here, one line below, and its name in aimbench.cards.backbone_card.ADAPTERS.
FAMILIES: dict[str, Callable[[], FamilyClass]] = {"timm": _timm, "aim": _aim, "open_clip": _open_clip}


def build_backbone(spec: BackboneSpec, weights: str | None = None, dtype: str = "fp32") -> Backbone:
    """Build a variant from its (possibly programmatically edited) spec through its family adapter."""
    if spec.adapter not in FAMILIES:  # a wrapped module's spec: the module itself holds the network
        raise UserError(f"backbone '{spec.name}' ({spec.adapter}) cannot be built from its spec alone; "
                        "wrap the module again with aimbench.adapters.module_family.backbone_from_module")  # fmt: skip
    return FAMILIES[spec.adapter]()(spec, weights, dtype)
