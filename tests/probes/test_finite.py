"""The finite checks: which index along an axis went non-finite, and the one-line errors naming it."""

from __future__ import annotations

import pytest
import torch

from aimbench.errors import UserError
from aimbench.probes.finite import finite_along, grid_point, require_finite_features, require_finite_heads


def test_finite_along_flags_each_index_of_the_axis() -> None:
    x = torch.zeros(4, 3, 2)
    x[2, 1, 0] = float("nan")
    x[0, 2, 1] = float("-inf")
    assert finite_along(x, 1) == [True, False, False]
    assert finite_along(x, 0) == [False, True, False, True]


def test_features_and_heads_errors_name_the_first_non_finite_one() -> None:
    x = torch.ones(5, 2, 3)
    require_finite_features(x, 1, ["layer set 0 (cls)", "layer set 1 (cls)"], "val")  # finite: nothing happens
    x[1, 1, 1] = float("inf")
    with pytest.raises(UserError, match=r"^the val features of layer set 1 \(cls\) hold NaN or inf"):
        require_finite_features(x, 1, ["layer set 0 (cls)", "layer set 1 (cls)"], "val")
    where = grid_point("L3", "cls", {"lr": 0.1, "weight_decay": 0.0})
    assert where == "layer set L3, cls, lr=0.1 weight_decay=0"
    with pytest.raises(UserError, match=r"^the head at layer set L3, cls, lr=0.1 weight_decay=0 went non-finite in training \(weights"):
        require_finite_heads([True, False, False], lambda i: where, "weights")
