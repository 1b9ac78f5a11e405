"""kNN probes end to end: cached pooled features of every needed block, then the neighbour search
over val and test for every layer set x token kind x k; nothing is trained, selection on val only."""

from __future__ import annotations

from aimbench.probes.features.extract import PooledFeatures, head_inputs
from aimbench.probes.features.splits import pooled_splits
from aimbench.probes.job import ProbeJob, ProbeOutcome
from aimbench.probes.knn.config import KnnProbeConfig
from aimbench.probes.knn.search import knn_probes
from aimbench.probes.sharding import merged_results
from aimbench.probes.timing import Timing


def run_knn(job: ProbeJob) -> ProbeOutcome:
    backbone, task, config = job.backbone, job.task, job.config_of(KnnProbeConfig)
    timing = Timing()
    sets, features, sources, cache = pooled_splits(job, timing)
    shard = job.shard
    if not shard.alone:  # this rank's layer sets only: each input's search is its own
        owned = set(shard.owned(sets))
        keep = [i for i, source in enumerate(sources) if source.layer_set in owned]
        features = {name: PooledFeatures(split.features[:, keep], split.labels) for name, split in features.items()}
        sources = [sources[i] for i in keep]
    inputs = len(head_inputs(sources))
    advance = job.progress(f"kNN over {inputs} inputs x {len(config.ks)} k", inputs)
    with timing.evaluating():  # the neighbour search over val and test is the evaluation
        result = merged_results(lambda: knn_probes(
            features["train"], features["val"], features["test"], sources, task.num_classes, config, task.metric,
            task.secondary_metrics, backbone.device, on_source=lambda _: advance(1),
        ), shard)  # fmt: skip
    return ProbeOutcome(result, {**config.as_dict(), "feature_cache": cache}, timing)
