"""Cells: the matrix of backbone x task x probe kind x seed, the identity that names records, and
up-front validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY_BACKBONE_CARD, micro_card_header, write_card

from aimbench.cards.registry import Registry
from aimbench.errors import UserError
from aimbench.launch.cells import Cell, plan_cells
from aimbench.probes.protocol import default_config


def test_plan_expands_the_matrix_and_validates_first(tiny_cards: Path) -> None:
    registry = Registry.load([tiny_cards])
    cells = plan_cells(registry, ["micro-cls", "micro-patches"], ["smoke"], seeds=[0, 1], layers="last", limit=10)
    assert [c.identity(registry).key for c in cells] == [
        f"{b}|{t}|linear|{s}|limit=10|layers=last"
        for b in ("micro-cls", "micro-patches")
        for t in ("digits", "fashion-mnist")
        for s in (0, 1)
    ]
    with pytest.raises(UserError, match="outside 0..2"):
        plan_cells(registry, ["micro-cls"], ["digits"], layers="3")
    with pytest.raises(UserError, match="unknown task"):
        plan_cells(registry, ["micro-cls"], ["digits", "nope"])
    with pytest.raises(UserError, match="exactly one backbone"):
        plan_cells(registry, ["micro-cls", "micro-patches"], ["digits"], weights="w.pt")
    with pytest.raises(UserError, match="positive"):
        plan_cells(registry, ["micro-cls"], ["digits"], limit=0)
    with pytest.raises(UserError, match="unknown probe 'svm'; available: linear, knn, attentive, official"):
        plan_cells(registry, ["micro-cls"], ["digits"], probe="linear,svm")
    with pytest.raises(UserError, match="avg:7-9"):
        plan_cells(registry, ["micro-cls"], ["digits"], layers="all,avg:7-9")


def test_probe_kinds_expand_with_their_own_configs(tiny_cards: Path) -> None:
    registry = Registry.load([tiny_cards])
    cells = plan_cells(registry, ["micro-cls"], ["digits"], probe="linear, knn,linear", layers="all,avg:1-2", overrides={"epochs": 3})
    assert [(c.probe, c.probe_config) for c in cells] == [("linear", default_config("linear", epochs=3)), ("knn", default_config("knn"))]
    assert all(c.layers == "all,avg:1-2" for c in cells)
    assert [c.protocol for c in cells] == ["dinov2-linear", "aim-v1"]  # each kind's default card
    fast = plan_cells(registry, ["micro-cls"], ["digits"], probe="linear,knn", protocol="aimbench-fast")
    assert [(c.protocol, c.probe_config) for c in fast] == [
        ("aimbench-fast", default_config(k, "aimbench-fast")) for k in ("linear", "knn")
    ]
    assert Cell("micro-cls", "digits", "knn", 0).probe_config == default_config("knn")
    with pytest.raises(UserError, match="run it on its own"):
        plan_cells(registry, ["micro-cls"], ["digits"], probe="official,linear")


def test_config_hash_covers_everything_that_changes_the_number(tmp_path: Path, tiny_cards: Path) -> None:
    registry = Registry.load([tiny_cards])
    base = Cell("micro-cls", "digits", "linear", 0)
    variants = [
        Cell("micro-cls", "digits", "linear", 1),
        Cell("micro-cls", "digits", "linear", 0, layers="last"),
        Cell("micro-cls", "digits", "linear", 0, limit=100),
        Cell("micro-cls", "digits", "linear", 0, weights="random"),
        Cell("micro-cls", "digits", "linear", 0, probe_config=default_config("linear", epochs=3)),
        Cell("micro-cls", "digits", "linear", 0, probe_config=default_config("linear", weight_decays=(0.0, 1e-4))),
        Cell("micro-cls", "digits", "linear", 0, probe_config=default_config("linear", grad_clip=1.0)),
        Cell("micro-cls", "digits", "linear", 0, protocol="aimbench-fast"),
        Cell("micro-cls", "digits", "linear", 0, protocol="aim-v1"),
        Cell("micro-cls", "digits", "knn", 0),
        Cell("micro-cls", "digits", "knn", 0, probe_config=default_config("knn", temperature=0.1)),
    ]
    hashes = {base.identity(registry).config_hash} | {v.identity(registry).config_hash for v in variants}
    assert len(hashes) == 1 + len(variants)
    assert base.identity(registry).config_hash == Cell("micro-cls", "digits", "linear", 0).identity(registry).config_hash

    # the same card content at another path hashes the same; edited content does not
    moved = tmp_path / "moved"
    write_card(moved, "backbones", "testfam", TINY_BACKBONE_CARD)
    assert base.identity(Registry.load([moved])).config_hash == base.identity(registry).config_hash
    edited = tmp_path / "edited"
    write_card(edited, "backbones", "testfam", TINY_BACKBONE_CARD.replace("std = [0.5, 0.5, 0.5]", "std = [0.25, 0.5, 0.5]"))
    assert base.identity(Registry.load([edited])).config_hash != base.identity(registry).config_hash
    # a resource hint sizes jobs and never changes a number: it is not part of the identity
    patches = Cell("micro-patches", "digits", "linear", 0)
    hinted = tmp_path / "hinted"
    write_card(
        hinted, "backbones", "testfam", TINY_BACKBONE_CARD.replace("memory_gb = { fp32 = 0.5 }", "memory_gb = { fp32 = 3, bf16 = 2 }")
    )
    assert Registry.load([hinted]).backbone("micro-patches").memory_gb == {"fp32": 3.0, "bf16": 2.0}
    assert patches.identity(Registry.load([hinted])).config_hash == patches.identity(registry).config_hash


def test_weights_file_content_is_part_of_the_identity(tmp_path: Path, tiny_cards: Path) -> None:
    registry = Registry.load([tiny_cards])
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"one")
    cell = Cell("micro-cls", "digits", "linear", 0, weights=str(weights))
    first = cell.identity(registry).config_hash
    weights.write_bytes(b"two!")
    assert cell.identity(registry).config_hash != first
    assert cell.identity(registry).record_name.startswith("micro-cls__digits__linear__seed0__")


def test_dtype_is_validated_and_part_of_the_identity(tiny_cards: Path) -> None:
    registry = Registry.load([tiny_cards])
    [cell] = plan_cells(registry, ["micro-cls"], ["digits"], dtype="bf16")
    assert cell.dtype == "bf16"
    assert cell.identity(registry).config_hash != Cell("micro-cls", "digits", "linear", 0).identity(registry).config_hash
    with pytest.raises(UserError, match="unknown dtype 'fp8'; one of fp32, bf16, fp16"):
        plan_cells(registry, ["micro-cls"], ["digits"], dtype="fp8")


_MICRO_CLS = TINY_BACKBONE_CARD[TINY_BACKBONE_CARD.index("[variants.micro-cls]") : TINY_BACKBONE_CARD.index("[variants.micro-patches]")]
WINDOWED = (
    micro_card_header("winfam")
    + _MICRO_CLS.replace("micro-cls", "micro-win")
    + """
[variants.micro-win.windows]  # the blocks a paper's probe averages
last = [1, 2]
best = [0, 1]
"""
)


def test_the_default_layers_probe_every_block_and_the_cards_windows(tiny_cards: Path) -> None:
    write_card(tiny_cards, "backbones", "winfam", WINDOWED)
    registry = Registry.load([tiny_cards])
    windowed, plain = plan_cells(registry, ["micro-win", "micro-cls"], ["digits"])
    assert (windowed.layers, plain.layers) == ("all,last,best", "all")
    assert windowed.identity(registry).key == "micro-win|digits|linear|0" and windowed.default_layers  # the default is not spelt out
    [chosen] = plan_cells(registry, ["micro-win"], ["digits"], layers="all")
    assert chosen.identity(registry).key == "micro-win|digits|linear|0|layers=all"
    assert chosen.identity(registry).config_hash != windowed.identity(registry).config_hash
    same = plan_cells(registry, ["micro-win"], ["digits"], layers="all,last,best")[0]
    assert same.identity(registry).config_hash == windowed.identity(registry).config_hash  # the same measurement, however it was asked for


def test_weights_overrides_are_named_and_keyed_by_content(tmp_path: Path, tiny_cards: Path) -> None:
    registry = Registry.load([tiny_cards])
    run = tmp_path / "runs" / "tiny"
    run.mkdir(parents=True)
    trained = (2).to_bytes(8, "little") + b"{}"  # the smallest safetensors file: planning reads its first bytes
    (run / "trunk.safetensors").write_bytes(trained)
    copy = tmp_path / "elsewhere.safetensors"
    copy.write_bytes(trained)
    [by_folder] = plan_cells(registry, ["micro-cls"], ["digits"], weights=str(run), limit=500, dtype="bf16")
    assert by_folder.identity(registry).key == "micro-cls@tiny|digits|linear|0|limit=500|bf16"
    [by_file] = plan_cells(registry, ["micro-cls"], ["digits"], weights=str(copy), name="mine", limit=500, dtype="bf16")
    assert by_file.identity(registry).key == "micro-cls@mine|digits|linear|0|limit=500|bf16"
    assert by_file.identity(registry).weights_key == by_folder.identity(registry).weights_key and by_file.identity(
        registry
    ).weights_key.startswith("sha256:")
    assert (
        by_file.identity(registry).config_hash == by_folder.identity(registry).config_hash
    )  # the name is a label, the content is the identity
    [card] = plan_cells(registry, ["micro-cls"], ["digits"])
    [random] = plan_cells(registry, ["micro-cls"], ["digits"], weights="random")
    assert (card.weights_name, card.identity(registry).weights_key, random.weights_name, random.identity(registry).key) == (
        "",
        "",
        "random",
        "micro-cls@random|digits|linear|0",
    )
    with pytest.raises(UserError, match="free of"):
        plan_cells(registry, ["micro-cls"], ["digits"], weights=str(copy), name="a|b")
    with pytest.raises(UserError, match="give --weights too"):
        plan_cells(registry, ["micro-cls"], ["digits"], name="mine")
    with pytest.raises(UserError, match="does not exist"):
        plan_cells(registry, ["micro-cls"], ["digits"], weights=str(tmp_path / "missing.pt"))
    (tmp_path / "notes.txt").write_text("not weights")
    with pytest.raises(UserError, match="not a safetensors or PyTorch"):
        plan_cells(registry, ["micro-cls"], ["digits"], weights=str(tmp_path / "notes.txt"))
