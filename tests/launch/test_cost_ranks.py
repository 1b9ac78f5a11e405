"""A cost plan for one cell over many ranks (aimbench.launch.ranks, aimbench.probes.ownership): one
rank's memory, the passes the run would take, the bytes a rank sends to the layer sets' owners,
and the world's time and GPU-hours. Cards only, fixed or assumed rates: no model, no timing."""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path

import pytest
from rich.console import Console

from aimbench.cards.registry import Registry
from aimbench.cli.eval import print_cost
from aimbench.errors import UserError
from aimbench.launch.base import EvalPlan
from aimbench.launch.cost import Geometry, SweepCost, cell_cost, plan_cost
from aimbench.launch.local import LocalLauncher
from aimbench.launch.memory import cell_memory
from aimbench.launch.options import RunOptions
from aimbench.launch.ranks import INTER_NODE_BYTES_PER_SECOND, INTRA_NODE_BYTES_PER_SECOND, Ranks
from aimbench.launch.request import EvalRequest
from aimbench.launch.slurm.resources import cell_parameters
from aimbench.launch.slurm.settings import SlurmSettings
from aimbench.launch.throughput import Assumption
from aimbench.probes.attentive.memory import bytes_per_layer_set

TERA = 1e12
RESULTS, DATA = Path("/nonexistent/results"), Path("/nonexistent/data")  # a plan needs neither
H100 = Assumption.of("h100", None, None)  # --assume-gpu h100
AIM_7B_SETS = 34  # 32 blocks and the card's last and best windows
TOKENS_PER_IMAGE = AIM_7B_SETS * 256 * 4096  # every layer set's patch tokens of one AIM-7B image
PER_SET = bytes_per_layer_set(4096, 256, 1000, 7 * 2, 64, 32)  # aim-v2: 7 lr x 2 wd, micro-batch 64; 32 heads
ROWS = 64  # a rank's rows of aim-v2's ImageNet batch of 1,024 on 16 ranks: one forward of --batch-size 64


def fixed(shape: Geometry, dtype: str) -> float:
    return TERA


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load()


def _plan(
    ranks: int, nodes: int = 1, dtype: str = "fp32", probe: str = "attentive", backbone: str = "aim-7b", protocol: str | None = None
) -> EvalPlan:
    request = EvalRequest.from_options(
        backbone, "imagenet-1k", probe, ranks=ranks, dtype=dtype, protocol=protocol, results=RESULTS, data_root=DATA
    )
    request = dataclasses.replace(request, options=dataclasses.replace(request.options, nodes=nodes))
    return LocalLauncher().plan(request, dry_run=True)


def _cost(ranks: int, nodes: int = 1, dtype: str = "fp32") -> SweepCost:
    return plan_cost(_plan(ranks, nodes, dtype), assume=H100)


def test_aim_7b_attentive_fits_one_pass_per_h100_on_16_ranks_and_not_on_one() -> None:
    """The issue's done-when, through the API: AIM-7B's ImageNet attentive heads (34 layer sets x 14
    grid points, 9.9 GB of heads a set) on 2 nodes x 8 H100s, fp32: the busiest rank's 3 sets' heads
    and its 64 rows of every set's tokens fit the 43 GB beside the 32 GB backbone."""
    [alone] = _cost(1).cells
    [spread] = _cost(16, nodes=2).cells
    assert alone.passes == 12 and spread.passes == 1
    assert spread.rank_bytes < 80e9 and spread.memory.gb == 32  # every rank holds the whole backbone
    assert spread.head_memory_bytes == alone.head_memory_bytes == 3 * PER_SET  # W=1's largest pass is 3 sets too
    assert spread.rank_bytes == 32e9 + spread.head_memory_bytes + spread.exchange.buffer_bytes
    # its rows of every set: one forward's fp32 outputs, each block's the tokens of the set of that block
    assert spread.exchange.buffer_bytes == 4 * ROWS * TOKENS_PER_IMAGE
    assert spread.head_memory_bytes + spread.exchange.buffer_bytes <= 0.9 * (80e9 - 32e9)  # the run's budget
    # alone: every row of a pass's 3 sets, forwarded in 16 chunks, each chunk's 3 block outputs written into them
    assert alone.exchange.buffer_bytes == 4 * (1024 + ROWS) * 3 * 256 * 4096
    assert spread.ranks == Ranks(16, 2)


def test_fewer_ranks_take_more_passes_and_bf16_outputs_are_copied() -> None:
    """8 ranks own 5 of the 34 sets each and forward 2 chunks of a batch: 3 passes; 24 ranks, one.
    A bf16 backbone's outputs are made fp32 tokens, so a chunk's outputs are held beside them."""
    [eight] = _cost(8).cells
    [twenty_four] = _cost(24, nodes=3).cells
    assert eight.passes == 3 and twenty_four.passes == 1
    [bf16] = _cost(16, nodes=2, dtype="bf16").cells
    assert bf16.passes == 1 and bf16.exchange.buffer_bytes == 4 * ROWS * TOKENS_PER_IMAGE + 2 * ROWS * 32 * 256 * 4096


def test_one_rank_sends_nothing_and_many_send_their_rows_of_other_owners_sets() -> None:
    [alone] = _cost(1).cells
    assert alone.exchange.step_bytes == alone.exchange.total_bytes == alone.comm_seconds == 0
    [spread] = _cost(16, nodes=2, dtype="bf16").cells
    batch, epochs = 1024, 100  # aim-v2's attentive batch and epochs
    per_image = 4 * TOKENS_PER_IMAGE  # float32 tokens
    assert spread.exchange.step_bytes == per_image * batch * 15 // 16**2  # its 64 rows, 15/16 of them to other owners
    images = epochs * 1_268_355 + 12_812 + 50_000  # online: every training view, then val and test
    assert spread.exchange.total_bytes == -(-per_image * images * 15 // 16**2)
    within, across = 7 / 15 / INTRA_NODE_BYTES_PER_SECOND, 8 / 15 / INTER_NODE_BYTES_PER_SECOND  # 7 peers on its node, 8 on the other
    assert spread.comm_seconds == pytest.approx(spread.exchange.total_bytes * (within + across))


def test_cached_kinds_gather_their_features_once_and_exchange_nothing_per_step() -> None:
    linear, knn = plan_cost(_plan(8, probe="linear,knn", backbone="aim-600m", protocol="aim-v1"), fixed).cells
    for cell in (linear, knn):
        assert cell.exchange.step_bytes == 0 and cell.exchange.total_bytes > 0
    # AIM-600M: 26 layer sets x its one pooled kind (the patch mean) x 1536 float32, every split once, 7/8 of a rank's 1/8
    images = 1_268_355 + 12_812 + 50_000
    assert knn.exchange.total_bytes == -(-4 * 26 * 1536 * images * 7 // 8**2)


def test_w_ranks_divide_the_forwards_and_the_busiest_rank_trains_its_sets(registry: Registry) -> None:
    [cell] = EvalRequest.from_options("aim-600m", "imagenet-1k", "attentive", protocol="aim-v1").cells(registry)
    alone = cell_cost(cell, registry, fixed, ranks=Ranks(1), chunk=64)
    pair = cell_cost(cell, registry, fixed, ranks=Ranks(2), chunk=64)
    assert alone.seconds == pytest.approx(alone.flops / TERA) and alone.comm_seconds == 0  # one rank: as before
    assert (pair.backbone_flops, pair.head_flops, pair.passes) == (alone.backbone_flops, alone.head_flops, 1)  # the same work
    heads_share = 13 / 26  # 26 layer sets: 13 a rank
    assert pair.seconds == pytest.approx(alone.backbone_flops / TERA / 2 + heads_share * alone.head_flops / TERA + pair.comm_seconds)
    assert pair.comm_seconds == pytest.approx(pair.exchange.total_bytes / INTRA_NODE_BYTES_PER_SECOND)  # one node: NVLink
    assert pair.gpu_seconds == 2 * pair.seconds


def test_forwards_move_in_whole_chunks_so_too_many_ranks_idle() -> None:
    assert Ranks(16).forward_share(1024, 64) == 1 / 16  # one chunk a rank
    assert Ranks(32).forward_share(1024, 64) == 1 / 16  # 16 chunks for 32 ranks: half of them forward nothing
    assert Ranks(3).forward_share(1024, 64) == 6 / 16  # 16 chunks over 3 ranks: 6, 5, 5
    assert Ranks(4).forward_share(None, 64) == 1 / 4  # no batch (kNN, released heads): an even share
    assert Ranks(16).set_share(34) == 3 / 34 and Ranks(64).set_share(34) == 1 / 34


def test_gpu_hours_are_the_world_time_on_every_rank() -> None:
    cost = _cost(16, nodes=2, dtype="bf16")
    assert cost.ranks.describe() == "16 GPUs (2 nodes x 8)" and Ranks().describe() == "1 GPU" and Ranks(8).describe() == "8 GPUs"
    assert cost.gpu_hours == pytest.approx(cost.total("seconds") * 16 / 3600)
    alone = _cost(1, dtype="bf16")
    assert alone.gpu_hours == pytest.approx(alone.total("seconds") / 3600)
    assert cost.total("seconds") < alone.total("seconds") / 16  # one pass instead of twelve


def test_the_dry_run_shows_per_rank_memory_communication_and_the_world() -> None:
    out = io.StringIO()
    print_cost(_plan(16, nodes=2), Console(file=out, width=250), here=False, assume=H100)
    text = out.getvalue()
    assert "each on 16 GPUs (2 nodes x 8)" in text and "sent per" in text and "memory" in text and "per rank" in text
    assert " on 16 GPUs (2 nodes x 8) = " in text and "GPU-hours on an assumed device" in text
    assert "per rank: device memory up to 70.6 GB" in text and "8.6 GB sent per step" in text
    assert "300 GB/s a rank within a node" in text and "25 GB/s across nodes" in text
    alone = io.StringIO()
    print_cost(_plan(1), Console(file=alone, width=250), here=False, assume=H100)
    assert "sent per" not in alone.getvalue() and "GPUs" not in alone.getvalue() and "x12 passes" in alone.getvalue()


def test_slurm_sizes_a_gpu_by_one_ranks_need(registry: Registry) -> None:
    """AIM-7B's aim-v1 linear heads (40 GB) beside its 32 GB backbone need an 80 GB GPU on one rank;
    on 8 ranks each holds an eighth of the heads and a 40 GB card will do."""
    [cell] = EvalRequest.from_options("aim-7b", "imagenet-1k", "linear", protocol="aim-v1").cells(registry)
    kinds = SlurmSettings(gpu_types={"a100-40g": 40, "h100-80g": 80})
    alone, spread = cell_memory(cell, registry, gpu=True), cell_memory(cell, registry, gpu=True, world=8)
    assert alone.total_gb > 40 > spread.total_gb and spread.ranks == 8 and spread.describe().endswith("per rank of 8")
    assert cell_parameters(kinds, alone, "aim-7b")["slurm_constraint"] == "h100-80g"
    assert cell_parameters(kinds, spread, "aim-7b")["slurm_constraint"] == "a100-40g|h100-80g"
    with pytest.raises(UserError, match="of GPU memory; the partition's GPUs have 48 GB"):
        cell_parameters(SlurmSettings(gpu_memory_gb=48), alone, "aim-7b")
    assert cell_parameters(SlurmSettings(gpu_memory_gb=48), spread, "aim-7b")["gpus_per_node"] == 1


def test_a_slurm_job_of_many_ranks_is_sized_by_one_ranks_need(registry: Registry) -> None:
    """2 nodes x 8 GPUs run AIM-7B's attentive cell: a GPU holds the backbone, one set's heads and its
    64 rows of the 16 sets of the least pass (a set a rank), not a rank alone's whole batch."""
    from aimbench.launch.slurm.launcher import SlurmLauncher

    [cell] = EvalRequest.from_options("aim-7b", "imagenet-1k", "attentive").cells(registry)
    _, need = SlurmLauncher(SlurmSettings(gpus_per_node=8, gpu_memory_gb=80), nodes=2, tasks_per_node=8).resources(cell, registry)
    assert need is not None and need.ranks == 16 and need.heads_gb == math.ceil(PER_SET / 1e8) / 10  # GB, up to a tenth
    assert need.exchange_gb == math.ceil(4 * ROWS * 16 * 256 * 4096 / 1e8) / 10


def test_ranks_must_divide_evenly_over_the_nodes() -> None:
    assert RunOptions(ranks=16, nodes=2).nodes == 2
    with pytest.raises(UserError, match="16 ranks per cell do not divide evenly over 3 nodes"):
        RunOptions(ranks=16, nodes=3)
    with pytest.raises(UserError, match="--nodes must be at least 1"):
        RunOptions(nodes=0)


def test_a_plan_with_more_ranks_than_layer_sets_is_refused_in_one_line(tiny_cards: Path) -> None:
    request = EvalRequest.from_options("micro-cls", "digits", "linear", layers="last,0", cards=tiny_cards, ranks=3)
    with pytest.raises(UserError, match=r"has 2 layer set\(s\) and each rank owns whole ones, so it runs on at most 2 rank\(s\), not 3"):
        LocalLauncher().plan(request, dry_run=True)
