"""Only finite numbers become measurements: features, head weights and logits are checked where they are made.

A NaN or inf raises nothing by itself: ``argmax`` over NaN logits picks class 0 and a cell would
record chance as a score, ranked like any other. So each probe checks its features after
extraction and its heads' weights and logits after training, and a non-finite one fails the whole
cell with one line naming where it went non-finite (the split and layer set, the grid point);
the record is written only after every check passed, so nothing is recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from aimbench.errors import UserError

NOTHING_RECORDED = "nothing was recorded"


def finite_along(tensor: torch.Tensor, dim: int) -> list[bool]:
    """For each index along ``dim``, whether every value there is finite."""
    flat = torch.isfinite(tensor.movedim(dim, 0).reshape(tensor.shape[dim], -1))
    return flat.all(dim=1).tolist()


def first_bad(finite: Sequence[bool]) -> int | None:
    return next((i for i, ok in enumerate(finite) if not ok), None)


def require_finite_features(tensor: torch.Tensor, dim: int, names: Sequence[str], split: str) -> None:
    """Refuse features (``dim``: the axis of layer sets or sources) holding NaN or inf, naming the first such one."""
    bad = first_bad(finite_along(tensor, dim))
    if bad is not None:
        raise UserError(
            f"the {split} features of {names[bad]} hold NaN or inf (the backbone's output is not a number: check its weights, "
            f"or run at --dtype fp32); {NOTHING_RECORDED}"
        )


def grid_point(layer_set: str, token: str, hparams: dict[str, Any]) -> str:
    """A head as a message names it: ``layer set L1, cls, lr=0.1 weight_decay=0``."""
    return f"layer set {layer_set}, {token}, " + " ".join(f"{k}={v:g}" for k, v in hparams.items())


def diverged(where: str, what: str) -> UserError:
    """The error of a head whose ``what`` (weights, val logits) went non-finite in training."""
    return UserError(
        f"the head at {where} went non-finite in training ({what} hold NaN or inf): lower its learning rate; {NOTHING_RECORDED}"
    )


def require_finite_heads(finite: Sequence[bool], names: Callable[[int], str], what: str) -> None:
    """Refuse the first head whose ``what`` is not finite (``finite``: one flag per head)."""
    bad = first_bad(finite)
    if bad is not None:
        raise diverged(names(bad), what)
