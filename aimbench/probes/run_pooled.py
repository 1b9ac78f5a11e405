"""Linear and kNN probes end to end: pooled features of every needed block from one backbone pass
per split (cached on disk), then every head of the grid trained together; selection on val only."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from aimbench.data.images import LabelledImages
from aimbench.probes.config import KnnProbeConfig
from aimbench.probes.feature_cache import Extraction, SplitKey, cached_pooled
from aimbench.probes.features import feature_sources, head_inputs, probe_inputs
from aimbench.probes.knn import knn_probes
from aimbench.probes.layer_sets import blocks_needed, parse_layer_sets
from aimbench.probes.linear import train_linear_probes
from aimbench.probes.run import ProbeJob, ProbeOutcome
from aimbench.probes.timing import Timing
from aimbench.probes.views import online_probe_inputs

SPLITS = ("train", "val", "test")
T = TypeVar("T")


def split_progress(job: ProbeJob, what: str, images: int) -> tuple[Callable[[int], None], Callable[[], None]]:
    """(on_batch, on_cached) for one split's features: a bar that advances as batches are extracted,
    or, when every block comes from the cache, one that says "cached" and is full at once (never a
    bar frozen at 0/N while the probe trains)."""
    bar: list[Callable[[int], None]] = []

    def on_batch(done: int) -> None:
        if not bar:
            bar.append(job.progress(what, images))
        bar[0](done)

    return on_batch, lambda: job.progress(f"{what} (cached)", images)(images)


def absolute(advance: Callable[[int], None]) -> Callable[[int], None]:
    """A callback taking units done so far (a resumed run starts past 0) that advances ``advance`` by the difference."""
    seen = [0]

    def reach(done: int) -> None:
        advance(done - seen[0])
        seen[0] = done

    return reach


def extraction(job: ProbeJob, what: str, images: int, count: Callable[[int], None] = lambda _: None) -> Extraction:
    """How a split's missing blocks are extracted: progress as ``what``, and ``count`` hears of
    every batch's images (a ``Timing.split`` counter)."""
    on_batch, on_cached = split_progress(job, what, images)

    def counted(done: int) -> None:
        count(done)
        on_batch(done)

    return Extraction(job.cache_dir, job.batch_size, job.workers, counted, on_cached)


def split_key(job: ProbeJob, name: str) -> SplitKey:
    return SplitKey(name, job.splits.source, job.splits.revision)


def cached_splits(
    job: ProbeJob, what: str, timing: Timing, fetch: Callable[[LabelledImages, SplitKey, Extraction], tuple[T, dict[str, int]]]
) -> tuple[dict[str, T], dict[str, int]]:
    """Each split's eval-crop features through the feature cache (``fetch``: pooled features or token
    maps), timed per split and shown as ``what``; and the cache's counts over the splits."""
    found, totals = {}, {}
    for name in SPLITS:
        images = getattr(job.splits, name)
        with timing.split(name) as count:
            found[name], stats = fetch(images, split_key(job, name), extraction(job, f"{what} {name}", len(images), count))
        totals = {k: totals.get(k, 0) + v for k, v in stats.items()}
    return found, totals


def run_pooled(job: ProbeJob) -> ProbeOutcome:
    """Linear or kNN heads for every layer set x token kind x grid point, on pooled features:
    cached (one backbone pass per split, ever), or for online linear probes augmented train views
    each step; linear training resumes from its checkpoint."""
    backbone, task, splits, config = job.backbone, job.task, job.splits, job.config
    sets = parse_layer_sets(job.layers, backbone.depth, backbone.spec.windows)
    blocks = blocks_needed(sets)
    timing = Timing()
    pooled, cache = cached_splits(job, "features", timing, lambda images, key, how: cached_pooled(backbone, images, blocks, key, how))
    features = {}
    for name in SPLITS:
        features[name], sources = probe_inputs(pooled[name], feature_sources(backbone, blocks), sets)
    if isinstance(config, KnnProbeConfig):  # nothing to train: the neighbour search over val and test is the evaluation
        inputs = len(head_inputs(sources))
        advance = job.progress(f"kNN over {inputs} inputs x {len(config.ks)} k", inputs)
        with timing.evaluating():
            result = knn_probes(
                features["train"], features["val"], features["test"], sources, task.num_classes, config, task.metric,
                task.secondary_metrics, backbone.device, on_source=lambda _: advance(1),
            )  # fmt: skip
    else:
        online = None
        if config.data_mode == "online":  # train on augmented views; eval-crop features give stats, val and test
            online = online_probe_inputs(backbone, splits.train, sets, config.augmentation, config.min_crop_scale,
                                         job.seed, config.batch_size, job.workers)  # fmt: skip
        reach = absolute(job.progress("linear heads", config.epochs))
        checkpoint = job.checkpointing(job.state_path, job.state_path.stem) if job.state_path else None
        # on_epoch(n): n epochs done, its last call ends training; forwards run for online views only
        with timing.heads_then_evaluation(reach) as on_epoch, timing.forwards(backbone):
            result = train_linear_probes(
                features["train"], features["val"], features["test"], sources, task.num_classes,
                config, job.seed, task.metric, task.secondary_metrics, backbone.device, on_epoch=on_epoch,
                checkpoint=checkpoint, online=online,
            )  # fmt: skip
    return ProbeOutcome(result, {**config.as_dict(), "feature_cache": cache}, timing)
