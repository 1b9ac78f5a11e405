"""Where a cell's time went: every probe kind's record keeps a ``timing`` breakdown (load, extraction
with images and images/s, heads, evaluation, backbone forwards, total) that adds up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aimbench.cards.registry import Registry
from aimbench.launch.base import PlannedCell
from aimbench.launch.cells import plan_cells
from aimbench.launch.options import RunOptions
from aimbench.launch.run_cell import run_cell
from aimbench.probes import timing as probe_timing
from aimbench.probes.timing import Timing
from tests.probes.attentive.test_attentive import official_card

PHASES = ("load_s", "extraction_s", "heads_s", "evaluation_s")
LIMIT = 48  # images per split


def run_cells(tmp_path: Path, cards: Path, backbone: str, probes: str, **overrides: Any) -> dict[str, dict[str, Any]]:
    registry = Registry.load([cards])
    cells = plan_cells(registry, [backbone], ["digits"], probes, limit=LIMIT, overrides=overrides, protocol="aim-v1")
    options = RunOptions(results_dir=tmp_path / "results", card_dirs=(cards,), device="cpu", cache_dir=tmp_path / "cache")
    planned = [PlannedCell(cell=cell, identity=cell.identity(registry), skip=False) for cell in cells]
    return {p.cell.probe: json.loads(run_cell(p, options, registry=registry).read_text(encoding="utf-8")) for p in planned}


def check_consistent(record: dict[str, Any]) -> dict[str, Any]:
    timing = record["timing"]
    numbers = [timing[phase] for phase in (*PHASES, "total_s")] + [s["s"] for s in timing["extraction_splits"].values()]
    assert all(isinstance(n, float) and n >= 0 for n in numbers), timing
    assert timing["total_s"] == record["wall_time_s"]
    assert sum(timing[phase] for phase in PHASES) <= timing["total_s"] + 0.005  # rounded to ms each
    assert timing["extraction_s"] == pytest.approx(sum(s["s"] for s in timing["extraction_splits"].values()), abs=0.005)
    assert timing["extraction_images"] == sum(s["images"] for s in timing["extraction_splits"].values())
    return timing


def test_every_probe_kind_records_where_its_time_went(tmp_path: Path, tiny_cards: Path) -> None:
    records = run_cells(tmp_path, tiny_cards, "micro-cls", "linear,knn,attentive", epochs=1)
    linear = check_consistent(records["linear"])  # the first cell extracts every split
    assert linear["extraction_images"] == 3 * LIMIT and linear["extraction_images_per_s"] > 0
    assert list(linear["extraction_splits"]) == ["train", "val", "test"] and linear["backbone_forward_s"] is None
    knn = check_consistent(records["knn"])  # the same features, all from the cache: nothing through the backbone
    assert knn["extraction_images"] == 0 and knn["extraction_images_per_s"] is None
    assert knn["heads_s"] == 0 and knn["backbone_forward_s"] is None  # kNN trains nothing: its neighbour search is the evaluation
    attentive = check_consistent(records["attentive"])  # online: augmented views through the backbone at every step
    assert attentive["extraction_splits"] == {} and attentive["extraction_images_per_s"] is None
    assert 0 <= attentive["backbone_forward_s"] <= attentive["heads_s"] + attentive["evaluation_s"] + 0.005


def test_cached_attentive_token_maps_count_as_extraction(tmp_path: Path, tiny_cards: Path) -> None:
    first = check_consistent(run_cells(tmp_path, tiny_cards, "micro-cls", "attentive", epochs=1, data_mode="cached")["attentive"])
    assert first["extraction_images"] == 3 * LIMIT and first["backbone_forward_s"] is None  # heads read the cache only


def test_released_heads_spend_their_time_in_evaluation(tmp_path: Path) -> None:
    official_card(tmp_path / "cards", tmp_path)
    records = run_cells(tmp_path, tmp_path / "cards", "aim-micro-x", "official", layers="last")
    timing = check_consistent(records["official:last"])
    assert timing["heads_s"] == 0 and timing["extraction_splits"] == {}
    assert 0 <= timing["backbone_forward_s"] <= timing["evaluation_s"] + 0.005


class Clock:
    """A ``time.perf_counter`` that moves only when told: no test here depends on the wall clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_training_ends_at_its_last_progress_call_and_the_rest_is_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, seen = Clock(), []
    monkeypatch.setattr(probe_timing.time, "perf_counter", clock)
    timing = Timing()
    with timing.heads_then_evaluation(seen.append) as on_epoch:
        clock.now += 2
        on_epoch(1)
        clock.now += 3
        on_epoch(2)
        clock.now += 0.5  # scoring val and test
    assert seen == [1, 2] and (timing.heads_s, timing.evaluation_s) == (5, 0.5)
    with timing.heads_then_evaluation(seen.append):  # resumed past its last epoch: nothing trains
        clock.now += 1
    assert (timing.heads_s, timing.evaluation_s) == (5, 1.5)
    with timing.split("train") as count:
        count(32)
        count(16)
        clock.now += 4
    with timing.split("val"):  # every block from the cache
        clock.now += 0.25
    record = timing.as_record(load_s=1, total_s=20)
    assert record["extraction_s"] == 4.25 and record["extraction_images"] == 48
    assert record["extraction_images_per_s"] == 12.0  # over the splits that ran the backbone only
    assert record["extraction_splits"] == {"train": {"s": 4.0, "images": 48}, "val": {"s": 0.25, "images": 0}}


def test_timing_forwards_wraps_the_backbone_only_while_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    class Backbone:
        device = type("Device", (), {"type": "cpu"})()

        def forward_layers(self, images: Any, layers: Any) -> str:
            clock.now += 2
            return "tokens"

    clock = Clock()
    monkeypatch.setattr(probe_timing.time, "perf_counter", clock)
    backbone, timing = Backbone(), Timing()
    with timing.forwards(backbone):  # type: ignore[arg-type]
        assert timing.forward_s is None  # no forward yet: none ran
        assert backbone.forward_layers([0], [1]) == "tokens" and backbone.forward_layers([0], [1]) == "tokens"
    assert timing.forward_s == 4 and "forward_layers" not in vars(backbone)
    counted: list[Any] = []
    backbone.forward_layers = lambda images, layers: counted.append(layers)  # an instance's own wrapper (a test's counter)
    with timing.forwards(backbone):  # type: ignore[arg-type]
        backbone.forward_layers([0], [2])
    assert counted == [[2]] and vars(backbone)["forward_layers"] is not None
    backbone.forward_layers([0], [3])
    assert counted == [[2], [3]] and timing.forward_s == 4  # restored: no longer timed
