"""Parsing --layers into layer sets: single blocks, windows, card windows, clear errors."""

from __future__ import annotations

import pytest

from aimbench.errors import UserError
from aimbench.probes.features.layer_sets import LayerSet, blocks_needed, parse_layer_sets

AIM_WINDOWS = {"last": (18, 19, 20, 21, 22, 23), "best": (14, 15, 16, 17, 18, 19)}


def test_blocks_and_all() -> None:
    assert parse_layer_sets("all", 3) == [LayerSet("0", (0,)), LayerSet("1", (1,)), LayerSet("2", (2,))]
    assert parse_layer_sets("0, 5,-1", 12) == [LayerSet("0", (0,)), LayerSet("5", (5,)), LayerSet("11", (11,))]
    assert parse_layer_sets("last", 12) == [LayerSet("11", (11,))]  # no card window: the final block


def test_windows_average_contiguous_blocks() -> None:
    assert parse_layer_sets("avg:18-23", 24) == [LayerSet("avg:18-23", (18, 19, 20, 21, 22, 23))]
    assert parse_layer_sets("avg:-6--1", 24) == [LayerSet("avg:18-23", (18, 19, 20, 21, 22, 23))]
    assert parse_layer_sets("avg:4-4", 8) == [LayerSet("avg:4-4", (4,))]


def test_card_windows_for_last_and_best() -> None:
    sets = parse_layer_sets("last,best,all", 24, AIM_WINDOWS)
    assert sets[0] == LayerSet("last=avg:18-23", AIM_WINDOWS["last"])
    assert sets[1] == LayerSet("best=avg:14-19", AIM_WINDOWS["best"])
    assert len(sets) == 2 + 24
    assert blocks_needed(sets) == list(range(24))
    assert parse_layer_sets("best", 24, {"best": (3, 7)})[0] == LayerSet("best=avg:3+7", (3, 7))


def test_duplicates_keep_the_first_name() -> None:
    assert parse_layer_sets("avg:23-23,23,-1", 24) == [LayerSet("avg:23-23", (23,))]
    assert parse_layer_sets("last,avg:18-23", 24, AIM_WINDOWS) == [LayerSet("last=avg:18-23", AIM_WINDOWS["last"])]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("x", "'x' is not a block index"),
        ("12", "block 12 is outside 0..11"),
        ("avg:5", "needs a range like avg:18-23"),
        ("avg:7-3", "window 'avg:7-3' is empty"),
        ("best", "defines no 'best' window"),
        ("", "'' is not a block index"),
    ],
)
def test_bad_layer_specs_are_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_layer_sets(spec, 12)
