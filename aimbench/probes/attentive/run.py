"""Attentive probes end to end: every layer set x lr x wd trained together, online from one backbone
pass per batch (more passes only when the heads do not fit the memory budget) or from cached token
maps, checkpointed so a killed run resumes; selection on val only."""

from __future__ import annotations

from functools import partial

import torch

from aimbench.cards.task_card import SPLITS
from aimbench.dtypes import BYTES
from aimbench.probes.attentive.config import AttentiveProbeConfig
from aimbench.probes.attentive.memory import HEADS_SHARE, TokenLayout, plan_passes
from aimbench.probes.attentive.tokens import CachedTokens
from aimbench.probes.attentive.training import train_attentive_probes
from aimbench.probes.config import grid_points
from aimbench.probes.features.cache import cached_tokens
from aimbench.probes.features.layer_sets import blocks_needed
from aimbench.probes.features.splits import absolute, cached_splits
from aimbench.probes.job import ProbeJob, ProbeOutcome
from aimbench.probes.results import summarise
from aimbench.probes.sharding import merged_results
from aimbench.probes.timing import Timing


def memory_budget(job: ProbeJob) -> int | None:
    """Bytes the attentive heads may use: the job's budget, else 90 % of the GPU's free memory, else no limit."""
    if job.memory_gb is not None:
        return int(job.memory_gb * 2**30)
    if job.backbone.device.type == "cuda":
        return int(HEADS_SHARE * torch.cuda.mem_get_info(job.backbone.device)[0])
    return None


def run_attentive(job: ProbeJob) -> ProbeOutcome:
    backbone, splits, config, task = job.backbone, job.splits, job.config_of(AttentiveProbeConfig), job.task
    sets, shard = list(job.layer_sets), job.shard
    grid = len(grid_points(config))
    layout = TokenLayout.of(config.batch_size, shard.chunk, shard.world, BYTES[backbone.dtype], len(backbone.spec.prefix_layout),
                            cached=config.data_mode == "cached")  # fmt: skip
    plan = plan_passes(sets, backbone.dim, backbone.patch_tokens(), task.num_classes, grid, layout, memory_budget(job),
                       config.micro_batch, backbone.heads, shard.world)  # fmt: skip
    cached: tuple[CachedTokens, CachedTokens, CachedTokens] | None = None
    cache, timing = {}, Timing()
    if config.data_mode == "cached":
        blocks = blocks_needed(sets)
        maps, totals = cached_splits(job, "token maps", timing, lambda images, key, how: cached_tokens(backbone, images, blocks, key, how))
        train_maps, val_maps, test_maps = (CachedTokens(maps[name]) for name in SPLITS)  # one backbone pass, ever
        cached, cache = (train_maps, val_maps, test_maps), {"feature_cache": totals}
    steps = config.epochs * -(-len(splits.train) // config.batch_size)
    results = []
    for index, chunk in enumerate(plan.passes):
        what = f"attentive heads, pass {index + 1}/{len(plan.passes)}" if len(plan.passes) > 1 else "attentive heads"
        reach = absolute(job.progress(f"{what} ({len(chunk)} layer sets x {grid} lr x wd)", steps))
        checkpoint = None
        if job.state_path is not None:
            state = job.state_path.with_name(f"{job.state_path.stem}.pass{index}.pt")
            # the identity names the pass's layer sets: a plan that changed (other free memory) never resumes a wrong state
            identity = f"{state.stem}:{','.join(layer_set.name for layer_set in chunk)}"
            checkpoint = job.checkpointing(state, identity)
        # online: the augmented views' and val/test forwards run inside, and forward_s says how long they took
        with timing.heads_then_evaluation(reach) as on_step, timing.forwards(backbone):
            train = partial(train_attentive_probes,
                backbone, splits.train, splits.val, splits.test, chunk, task.num_classes, config, job.seed, task.metric,
                task.secondary_metrics, checkpoint, job.batch_size, job.workers, on_step, cached, shard,
            )  # fmt: skip
            results.append(merged_results(train, shard))
    merged = summarise([h for r in results for h in r.heads], [layer for r in results for layer in r.layers])
    return ProbeOutcome(merged, {**config.as_dict(), "passes": len(plan.passes), "memory_plan": plan.describe(), **cache}, timing)
