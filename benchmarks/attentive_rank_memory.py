"""What one rank of an attentive cell holds while it trains, measured, next to what the plan says.

Runs one epoch of the attentive heads (the default grid, online views) alone and as two gloo
ranks on this CPU, each in its own process, and measures in each rank the growth of its peak
resident memory over training (Linux's VmHWM, reset just before training starts, after a small
warm-up fit; run with ``MALLOC_MMAP_THRESHOLD_=65536`` so that every large tensor is mapped and
unmapped and the peak follows the live tensors, not glibc's heap). Beside it, the plan's estimate
for that rank (``aimbench.probes.attentive.memory``): its owned sets' heads (``bytes_per_layer_set``)
and its batch tokens (``batch_tokens_bytes``). The heads' weights exist before training, so the
measured growth should stay under the estimate; a growth above it means the plan undercounts.

    MALLOC_MMAP_THRESHOLD_=65536 python benchmarks/attentive_rank_memory.py --backbone aim-tiny --task digits --limit 0 --batch 1024
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import harness  # benchmarks/harness.py, next to this script
import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing

from aimbench.dtypes import BYTES
from aimbench.launch.spawn import free_port
from aimbench.probes.attentive.config import AttentiveProbeConfig
from aimbench.probes.attentive.memory import TokenLayout, batch_tokens_bytes, bytes_per_layer_set
from aimbench.probes.attentive.training import AttentiveTrainer, fit
from aimbench.probes.features.layer_sets import parse_layer_sets
from aimbench.probes.ownership import Shard, most_sets_per_rank
from aimbench.probes.protocol import default_config

MB = 2**20


def _peak_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident set, to the current one


def _status_kb(field: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1])


def _rank(rank: int, world: int, port: int, args: object, out: Path) -> None:
    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    task, splits, backbone = harness.load(args)
    config = default_config("attentive", batch_size=args.batch, base_batch_size=args.batch, epochs=1)
    assert isinstance(config, AttentiveProbeConfig)
    config = dataclasses.replace(config, micro_batch=args.micro)  # a memory setting, not a protocol field
    sets = parse_layer_sets("all", backbone.depth)
    shard = Shard(rank, world, args.chunk)
    trainer = AttentiveTrainer(backbone, sets, task.num_classes, config, seed=0, shard=shard)
    tokens, points = backbone.patch_tokens(), len(config.learning_rates) * len(config.weight_decays)
    batch = min(args.batch, len(splits.train))
    layout = TokenLayout.of(batch, args.chunk, world, BYTES[backbone.dtype], len(backbone.spec.prefix_layout))
    owned = most_sets_per_rank(len(sets), world)
    heads = owned * bytes_per_layer_set(backbone.dim, tokens, task.num_classes, points, config.micro_batch, backbone.heads)
    held = batch_tokens_bytes(sets, owned, tokens, backbone.dim, layout)
    # a first, small fit warms what is loaded once (code pages, the loader, gloo's buffers), which is no tensor of the plan's
    small = dataclasses.replace(config, batch_size=args.chunk * world, base_batch_size=args.chunk * world)
    fit(AttentiveTrainer(backbone, sets, task.num_classes, small, seed=0, shard=shard), splits.train.subset(np.arange(args.chunk * world)))
    before = _status_kb("VmRSS")
    _peak_reset()
    fit(trainer, splits.train)
    growth = (_status_kb("VmHWM") - before) * 1024
    (out / f"{world}.{rank}").write_text(f"{heads} {held} {growth}")
    if world > 1:
        dist.destroy_process_group()


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--batch", type=int, default=1024, help="the attentive recipe's global batch")
    parser.add_argument("--chunk", type=int, default=64, help="images per backbone forward (--batch-size)")
    parser.add_argument("--micro", type=int, default=64, help="the heads' micro-batch")
    parser.set_defaults(backbone="aim-tiny")
    args = parser.parse_args()
    args.limit = args.limit or None
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        for world in (1, 2):
            torch.multiprocessing.spawn(_rank, args=(world, free_port(), args, out), nprocs=world, join=True)
        print(f"{args.backbone} on {args.task}, batch {args.batch}, forwards of {args.chunk}, micro-batch {args.micro}, one epoch")
        print(f"{'ranks':>5} {'rank':>4} {'heads (plan)':>13} {'batch (plan)':>13} {'plan':>9} {'measured':>9} {'measured/plan':>13}")
        for world in (1, 2):
            for rank in range(world):
                heads, held, growth = (int(x) for x in (out / f"{world}.{rank}").read_text().split())
                plan = heads + held
                print(
                    f"{world:>5} {rank:>4} {heads / MB:>10.1f} MB {held / MB:>10.1f} MB {plan / MB:>6.1f} MB {growth / MB:>6.1f} MB {growth / plan:>13.2f}"
                )


if __name__ == "__main__":
    main()
