"""One-line user errors (aimbench.errors), also out of DataLoader worker processes."""

from __future__ import annotations

import pytest
import torch

from aimbench.errors import UserError, one_line_worker_errors


class _BrokenSource(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> torch.Tensor:
        if index == 1:
            raise UserError("--data /x: the source went away")
        return torch.zeros(1)


def test_a_user_error_in_a_loader_worker_comes_out_as_its_one_line() -> None:
    loader = torch.utils.data.DataLoader(_BrokenSource(), batch_size=None, num_workers=1)
    with pytest.raises(UserError) as info:
        list(one_line_worker_errors(loader))
    assert str(info.value) == "--data /x: the source went away"
