"""Seeds as a request names them: integers the record's seed column and the generators both hold."""

from __future__ import annotations

import pytest

from aimbench.errors import UserError
from aimbench.launch.request import MAX_SEED, parse_seeds


def test_seeds_from_zero_to_the_largest_pass_and_others_are_one_error() -> None:
    assert parse_seeds(f"0,{MAX_SEED}", None) == (0, MAX_SEED)
    for bad in (MAX_SEED + 1, -1, 2**64):
        with pytest.raises(UserError, match=f"bad --seed {bad}: seeds are integers from 0 to {MAX_SEED}"):
            parse_seeds(bad, None)
