"""The cost of a plan (aimbench.launch.cost): FLOPs from the cards' architectures, sizes from the
task cards with no data present, and totals; times are measured, so only their presence is tested."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from aimbench.cards.registry import Registry
from aimbench.cards.task_card import ValPolicy
from aimbench.errors import UserError
from aimbench.launch.cost import (
    Geometry,
    cell_cost,
    forward_flops,
    geometry,
    plan_cost,
)
from aimbench.launch.local import LocalLauncher
from aimbench.launch.options import RunOptions
from aimbench.launch.request import EvalRequest
from aimbench.launch.shape import split_sizes
from aimbench.launch.throughput import GPUS, MIN_REPS, Assumption, Rate, block_flops, calibrate, rate_of
from aimbench.probes.attentive.kind import attentive_head_flops

TERA = 1e12  # a made-up throughput, FLOP/s: no calibration in these tests


def fixed(shape: Geometry, dtype: str) -> float:
    return TERA


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load()


def test_a_vit_b16_forward_costs_what_the_formula_and_the_literature_say() -> None:
    # ViT-B/16 at 224 px: 196 patches + cls, width 768, 12 blocks; 24 N D^2 + 4 N^2 D per block
    assert block_flops(197, 768) == 24 * 197 * 768**2 + 4 * 197**2 * 768 == 2_907_909_120
    vit_b16 = Geometry(depth=12, dim=768, heads=12, patch_tokens=196, prefix_tokens=1)
    assert forward_flops(vit_b16, 12) == 12 * 2_907_909_120  # 34.9 GFLOP: the usual "17.6 GMACs" of ViT-B/16
    assert forward_flops(vit_b16, 6) == forward_flops(vit_b16, 12) // 2  # the forward stops at the deepest block read
    # attentive head: 4 h N D (scores and pooling per attention head) + 2 D^2 (value projection) + 2 D C
    assert attentive_head_flops(196, 768, 12, 1000) == 4 * 12 * 196 * 768 + 2 * 768**2 + 2 * 768 * 1000


def test_geometry_comes_from_the_cards(registry: Registry) -> None:
    assert geometry(registry.backbone("aim-600m")) == Geometry(24, 1536, 12, 256, 0)  # AIM's preset: patch 14, no cls
    assert geometry(registry.backbone("dinov2-vitb14-reg")) == Geometry(12, 768, 12, 256, 5)  # arch name, cls + 4 registers
    assert geometry(registry.backbone("dfn5b-vith14-378")).patch_tokens == 27**2  # open_clip's ViT-H-14 at 378 px
    assert geometry(registry.backbone("vit-tiny-reg")) == Geometry(6, 96, 3, 64, 4)  # model_args patch_size 4 at 32 px


def test_sizes_come_from_the_task_card_and_a_protocol_carved_val_leaves_train(registry: Registry) -> None:
    imagenet = registry.task("imagenet-1k")
    assert split_sizes(imagenet, None, 0.1) == {"train": 1_268_355, "val": 12_812, "test": 50_000}
    assert split_sizes(imagenet, 1000, 0.1) == {"train": 1000, "val": 1000, "test": 1000}
    by_protocol = dataclasses.replace(imagenet, val=ValPolicy(), expected_sizes={"train": 1001, "test": 300})
    assert split_sizes(by_protocol, None, 0.1) == {"train": 900, "val": 101, "test": 300}  # the val share rounds up


def test_an_attentive_cell_costs_its_backbone_and_little_else(registry: Registry) -> None:
    [cell] = EvalRequest(backbones=("aim-600m",), tasks=("imagenet-1k",), probes=("attentive",), protocol="aim-v1").cells(registry)
    cost = cell_cost(cell, registry, fixed)
    epochs, train = cell.probe_config.epochs, cost.images["train"]
    assert cost.forwards == epochs * train + cost.images["val"] + cost.images["test"]  # online: augmented views every epoch
    assert cost.backbone_flops == cost.forwards * 24 * block_flops(256, 1536)
    assert 0 < cost.head_flops < 0.05 * cost.backbone_flops  # heads pool before they project: far below the backbone
    assert cost.seconds == pytest.approx(cost.flops / TERA)
    assert cost.memory.describe() == "5 GB fp32 (card)" and cost.cache_bytes == 0  # online: nothing cached


def test_each_probe_kind_counts_its_forwards(registry: Registry) -> None:
    request = EvalRequest(
        backbones=("vit-tiny-cls",), tasks=("digits",), probes=("linear", "knn", "attentive"), epochs=3, protocol="aim-v1"
    )
    linear, knn, attentive = (cell_cost(c, registry, fixed) for c in request.cells(registry))
    once = 1347 + 150 + 300
    assert knn.forwards == once and knn.cache_bytes > 0  # cached: one forward per image, ever
    assert linear.forwards == once  # aim-v1's linear probe trains on cached features
    assert attentive.forwards == 3 * 1347 + 150 + 300 and attentive.cache_bytes == 0
    online_request = EvalRequest(
        backbones=("vit-tiny-cls",), tasks=("digits",), probes=("linear",), epochs=3, data_mode="online", protocol="aim-v1"
    )
    [online] = online_request.cells(registry)
    assert cell_cost(online, registry, fixed).forwards == once + 3 * 1347  # eval crops for the statistics, then augmented views
    [dinov2] = EvalRequest(backbones=("vit-tiny-cls",), tasks=("digits",), probes=("linear",), epochs=3).cells(registry)  # the default
    assert cell_cost(dinov2, registry, fixed).forwards == once + 3 * 1250 * 1024  # fixed epochs of 1,250 steps of 1,024 views
    [official] = EvalRequest(backbones=("aim-600m",), tasks=("imagenet-1k",), probes=("official",), layers="last").cells(registry)
    released = cell_cost(official, registry, fixed)
    assert released.forwards == 12_812 + 50_000 and released.backbone_flops == released.forwards * 24 * block_flops(256, 1536)


def test_a_dry_run_plan_needs_no_data_and_its_totals_add_up(tmp_path: Path) -> None:
    options = RunOptions(results_dir=tmp_path / "results", data_root=tmp_path / "no-data")
    request = EvalRequest(
        backbones=("aim-600m", "vit-tiny-cls"), tasks=("imagenet-1k", "cifar10"), probes=("linear", "knn", "attentive"), options=options
    )
    with pytest.raises(UserError, match="has no local copy"):
        LocalLauncher().plan(request)  # a run needs the data
    plan = LocalLauncher().plan(request, dry_run=True)
    assert len(plan.cells) == 12 and plan.dry_run and not (tmp_path / "results").exists()
    skipped = dataclasses.replace(plan.cells[0], skip=True)  # as if its record existed
    plan = dataclasses.replace(plan, cells=[skipped, *plan.cells[1:]])
    cost = plan_cost(plan, fixed)
    assert [c.key for c in cost.cells] == [p.identity.key for p in plan.cells] and cost.cells[0].skip
    assert cost.cells[1].images == {"train": 1_268_355, "val": 12_812, "test": 50_000}  # the card's sizes
    run = cost.cells[1:]
    assert cost.to_run == run
    groups: dict[object, list[float]] = {}
    for c in run:  # linear and kNN of one backbone and task share one extraction: the totals count it once
        if c.shared is not None:
            groups.setdefault(c.shared, []).append(c.shared_part["forwards"])
    assert len(groups) == 4 and all(len(parts) == 2 or c.skip for parts in groups.values() for c in cost.cells[:1])
    assert cost.total("forwards") == pytest.approx(sum(c.forwards for c in run) - sum(sum(p) - max(p) for p in groups.values()))
    assert cost.total("head_flops") == pytest.approx(sum(c.head_flops for c in run))
    for field in ("backbone_flops", "flops", "seconds"):
        assert cost.total(field) < sum(getattr(c, field) for c in run)
    assert cost.images == sum(sum(c.images.values()) for c in run)
    assert cost.peak_memory.describe() == "5 GB fp32 (card)"
    # linear and kNN of one backbone and task share their cached features: the total counts them once
    shared = {tuple(c.key.split("|")[:2]): c.cache_bytes for c in run if c.cache_bytes}  # linear's and kNN's are the same
    assert cost.cache_bytes == sum(shared.values()) and cost.cache_bytes < sum(c.cache_bytes for c in run)
    assert set(cost.rates) == {"1536x256 fp32", "96x65 fp32"}  # linear heads in fp32 too: the default


def test_linear_heads_are_timed_at_their_own_precision(registry: Registry) -> None:
    def by_dtype(shape: object, dtype: str) -> float:
        return {"fp32": TERA, "bf16": 4 * TERA}[dtype]

    request = EvalRequest(backbones=("aim-600m",), tasks=("imagenet-1k",), probes=("linear",))
    [fp32] = request.cells(registry)  # the default
    [bf16] = dataclasses.replace(request, head_precision="bf16").cells(registry)
    for cell, rate in ((bf16, 4 * TERA), (fp32, TERA)):
        cost = cell_cost(cell, registry, by_dtype)
        assert cost.seconds == pytest.approx(cost.backbone_flops / TERA + cost.head_flops / rate)


def test_calibration_times_one_block_and_reports_a_throughput() -> None:
    rate = calibrate(32, 2, 17, "fp32", "cpu")  # a micro block: milliseconds
    assert rate.flops_per_second > 0 and rate.spread >= 0


def test_a_calibration_is_the_median_of_its_timings_and_says_their_spread() -> None:
    # one busy moment (the 4.0 s run) moves neither the rate nor much the spread: the median and the interquartile range
    rate = rate_of([1.0, 1.1, 0.9, 1.0, 4.0, 1.0, 1.05], flops=2e9)
    assert rate.flops_per_second == pytest.approx(2e9) and rate.spread == pytest.approx((1.1 - 0.95) / 2, abs=0.03)
    assert MIN_REPS >= 5 and rate_of([2.0], 4e9) == Rate(2e9, 0.0)
    assert Rate(2.5e13, 0.0).describe() == "25 TFLOP/s" and Rate(4.2e10, 0.08).describe() == "42 GFLOP/s ±8%"


def test_a_plan_for_a_gpu_this_machine_lacks_uses_its_datasheet_peak_at_a_stated_utilisation(registry: Registry) -> None:
    h100 = Assumption.of("H100", None, None)
    assert h100 is not None and h100.gpu == GPUS["h100"] and h100.utilisation == 0.4
    assert h100.rate("bf16").flops_per_second == pytest.approx(0.4 * 989e12) and h100.rate("fp32").flops_per_second == pytest.approx(
        0.4 * 67e12
    )
    given = Assumption.of(None, 100.0, 0.5)
    assert given is not None and given.rate("fp32").flops_per_second == pytest.approx(50e12) and given.memory_gb is None
    assert Assumption.of(None, None, None) is None
    for bad, message in ((("h1000", None, None), "unknown GPU 'h1000'; did you mean: h100"), ((None, 0.0, None), "positive"),
                         (("a100", None, 1.5), r"--utilisation must be in \(0, 1\]"), ((None, None, 0.5), "scales an assumed device")):  # fmt: skip
        with pytest.raises(UserError, match=message):
            Assumption.of(*bad)
    options = RunOptions(results_dir=Path("/nonexistent/results"), data_root=Path("/nonexistent/data"))
    request = EvalRequest.from_options("aim-7b", "imagenet-1k", "attentive", results=options.results_dir, data_root=options.data_root)
    plan = LocalLauncher().plan(request, dry_run=True)
    cost = plan_cost(plan, assume=h100)
    [cell] = cost.cells
    assert cost.device.startswith("an assumed device") and cost.rates["4096x256 fp32"] == h100.rate("fp32")
    assert cell.passes > 1 and cell.head_memory_bytes < 0.9 * 80e9  # 26 layer sets' heads do not fit beside the backbone: passes
    epochs = plan.cells[0].cell.probe_config.epochs
    assert cell.forwards == cell.passes * (epochs * 1_268_355 + 12_812 + 50_000)  # each pass: the augmented views, then val and test
    on_cpu = plan_cost(plan, fixed).cells[0]
    assert on_cpu.passes == 1 and on_cpu.forwards == cell.forwards // cell.passes  # no device limit: one pass


def test_totals_count_a_feature_extraction_cells_share_once(registry: Registry) -> None:
    options = {"results": "/nonexistent/results", "data_root": "/nonexistent/data"}
    plan = LocalLauncher().plan(EvalRequest.from_options("aim-600m", "cifar10", "linear,knn", protocol="aim-v1", **options), dry_run=True)
    cost = plan_cost(plan, fixed)
    linear, knn = cost.cells
    assert linear.forwards == knn.forwards == 60_000  # each alone: one pass over every split
    assert cost.total("forwards") == 60_000 and cost.total("backbone_flops") == linear.backbone_flops  # together: one extraction
    assert cost.total("head_flops") == linear.head_flops + knn.head_flops
    assert cost.total("seconds") == pytest.approx(linear.seconds + knn.seconds - linear.backbone_flops / TERA)


def test_successive_halving_costs_the_share_of_head_steps_it_keeps(registry: Registry) -> None:
    aim = {"backbones": ("aim-600m",), "tasks": ("imagenet-1k",), "probes": ("linear",), "protocol": "aim-v1"}
    [halved], [full] = EvalRequest(**aim, grid_search="halving").cells(registry), EvalRequest(**aim).cells(registry)
    halved_cost, full_cost = cell_cost(halved, registry, fixed), cell_cost(full, registry, fixed)
    assert halved_cost.backbone_flops == full_cost.backbone_flops  # the same features
    assert 0.15 < halved_cost.head_flops / full_cost.head_flops < 0.3  # AIM: 18 heads per layer set, about a fifth kept


def test_the_disk_estimate_counts_aim_token_maps_like_the_cost_plan(registry: Registry) -> None:
    from aimbench.launch.cost import patch_count
    from aimbench.launch.shape import patch_tokens

    for name in ("aim-600m", "aim-7b", "aim-tiny"):
        spec = registry.backbone(name)
        assert patch_tokens(spec) == patch_count(spec) > 0, name  # AIM's patch size is its preset's, not in the arch name


def test_each_kind_says_what_its_heads_hold_on_the_device(registry: Registry) -> None:
    from aimbench.probes.attentive.memory import bytes_per_layer_set

    attentive, linear, knn = (
        cell_cost(c, registry, fixed)
        for c in EvalRequest.from_options("aim-600m", "imagenet-1k", "attentive,linear,knn", protocol="aim-v1").cells(registry)
    )
    config, sets = registry.protocol("aim-v1"), 26  # AIM-600M: 24 blocks + the last and best windows
    points = len(config.sections["attentive"]["learning_rates"].value) * len(config.sections["attentive"]["weight_decays"].value)
    assert attentive.head_memory_bytes == sets * bytes_per_layer_set(1536, 256, 1000, points, 64, 12)
    linear_points = len(config.sections["linear"]["learning_rates"].value) * len(config.sections["linear"]["weight_decays"].value)
    assert linear.head_memory_bytes == 4 * 4 * (
        linear_points * sets * 1536 * 1000 + linear_points * sets * 1000
    )  # fp32 weight, grad, 2 moments
    assert knn.head_memory_bytes == 4 * 1536 * (1_268_355 + 50_000)  # one input's train bank and the larger query split
    [official] = EvalRequest.from_options("aim-600m", "imagenet-1k", "official", layers="last").cells(registry)
    assert cell_cost(official, registry, fixed).head_memory_bytes == 4 * (2 * 1536**2 + 1536 + 1000 * 1536 + 1000)


def test_dinov2_linear_costs_its_fixed_steps_of_views_and_its_token_kinds(registry: Registry) -> None:
    """12,500 steps of 1,024 augmented views whatever the task's size, each through the backbone
    (online), heads on DINOv2's token kinds: for a cls-less AIM, the patch mean alone."""
    from aimbench.launch.shape import plan_shape
    from aimbench.probes.linear.kind import linear_head_flops

    [cell] = EvalRequest(backbones=("aim-600m",), tasks=("dtd",), probes=("linear",), protocol="dinov2-linear").cells(registry)
    cost, shape = cell_cost(cell, registry, fixed), plan_shape(cell, registry, patches=256)
    views = 10 * 1250 * 1024
    assert cost.forwards == sum(shape.sizes.values()) + views
    per_image = 13 * linear_head_flops(len(shape.layer_sets) * shape.dim, shape.classes)  # one column per set: patch_mean
    assert cost.head_flops == round(per_image * (2 * views + shape.evaluated))
