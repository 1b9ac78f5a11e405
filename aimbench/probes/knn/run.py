"""kNN probes end to end: cached pooled features of every needed block, then the neighbour search
over val and test for every layer set x token kind x k; nothing is trained, selection on val only."""

from __future__ import annotations

from aimbench.probes.features.extract import head_inputs
from aimbench.probes.features.splits import pooled_splits
from aimbench.probes.job import ProbeJob, ProbeOutcome
from aimbench.probes.knn.config import KnnProbeConfig
from aimbench.probes.knn.search import knn_probes
from aimbench.probes.timing import Timing


def run_knn(job: ProbeJob) -> ProbeOutcome:
    backbone, task, config = job.backbone, job.task, job.config_of(KnnProbeConfig)
    timing = Timing()
    _, features, sources, cache = pooled_splits(job, timing)
    inputs = len(head_inputs(sources))
    advance = job.progress(f"kNN over {inputs} inputs x {len(config.ks)} k", inputs)
    with timing.evaluating():  # the neighbour search over val and test is the evaluation
        result = knn_probes(
            features["train"], features["val"], features["test"], sources, task.num_classes, config, task.metric,
            task.secondary_metrics, backbone.device, on_source=lambda _: advance(1),
        )  # fmt: skip
    return ProbeOutcome(result, {**config.as_dict(), "feature_cache": cache}, timing)
