"""Linear probes end to end: pooled features of every needed block (cached: one backbone pass per
split, ever; online: augmented train views each step), then every head of the grid trained
together, resuming from its checkpoint; selection on val only."""

from __future__ import annotations

from aimbench.probes.features.extract import read_block_norm
from aimbench.probes.features.splits import absolute, pooled_splits
from aimbench.probes.features.views import online_probe_inputs
from aimbench.probes.job import ProbeJob, ProbeOutcome
from aimbench.probes.linear.config import LinearProbeConfig
from aimbench.probes.linear.training import train_linear_probes
from aimbench.probes.sharding import merged_results
from aimbench.probes.timing import Timing


def run_linear(job: ProbeJob) -> ProbeOutcome:
    backbone, task, config = job.backbone, job.task, job.config_of(LinearProbeConfig)
    timing = Timing()
    block_norm = read_block_norm(backbone, config.block_norm)
    sets, features, sources, cache = pooled_splits(job, timing, block_norm)
    shard = job.shard
    online = None
    if config.data_mode == "online":  # train on augmented views; eval-crop features give stats, val and test
        online = online_probe_inputs(backbone, job.splits.train, sets, config.augmentation, config.min_crop_scale,
                                     job.seed, config.batch_size, job.workers, block_norm, shard)  # fmt: skip
    reach = absolute(job.progress("linear heads", config.epochs))  # epochs of the recipe: its epoch_length steps, or a pass
    checkpoint = job.checkpointing(job.state_path, job.state_path.stem) if job.state_path else None
    # on_epoch(n): n epochs done, its last call ends training; forwards run for online views only
    with timing.heads_then_evaluation(reach) as on_epoch, timing.forwards(backbone):
        result = merged_results(lambda: train_linear_probes(
            features["train"], features["val"], features["test"], sources, task.num_classes,
            config, job.seed, task.metric, task.secondary_metrics, backbone.device, on_epoch=on_epoch,
            checkpoint=checkpoint, online=online, owned=None if shard.alone else shard.owned(sets),
        ), shard)  # fmt: skip
    read = {} if block_norm == config.block_norm else {"block_norm_read": f"{block_norm}: the network has no norm after its last block"}
    return ProbeOutcome(result, {**config.as_dict(), "feature_cache": cache, **read}, timing)
