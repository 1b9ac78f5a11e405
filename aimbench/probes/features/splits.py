"""Each split's eval-crop features through the feature cache, with progress and timing: what every
kind that reads cached features (linear, kNN, cached attentive) does before its heads train."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from aimbench.cards.task_card import SPLITS
from aimbench.data.images import LabelledImages
from aimbench.probes.features.cache import Extraction, SplitKey, cached_pooled
from aimbench.probes.features.extract import PooledFeatures, ProbeSource, feature_sources, probe_inputs
from aimbench.probes.features.layer_sets import LayerSet, blocks_needed
from aimbench.probes.finite import require_finite_features
from aimbench.probes.job import ProbeJob
from aimbench.probes.timing import Timing

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

    return Extraction(job.cache_dir, job.batch_size, job.workers, counted, on_cached, job.shard)


def split_key(job: ProbeJob, name: str) -> SplitKey:
    return SplitKey(name, job.splits.source, job.splits.revision)


def cached_splits(
    job: ProbeJob, what: str, timing: Timing, fetch: Callable[[LabelledImages, SplitKey, Extraction], tuple[T, dict[str, int]]]
) -> tuple[dict[str, T], dict[str, int]]:
    """Each split's eval-crop features through the feature cache (``fetch``: pooled features or token
    maps), timed per split and shown as ``what``; and the cache's counts over the splits."""
    found: dict[str, T] = {}
    totals: dict[str, int] = {}
    for name in SPLITS:
        images = getattr(job.splits, name)
        with timing.split(name) as count:
            found[name], stats = fetch(images, split_key(job, name), extraction(job, f"{what} {name}", len(images), count))
        totals = {k: totals.get(k, 0) + v for k, v in stats.items()}
    return found, totals


def pooled_splits(
    job: ProbeJob, timing: Timing, block_norm: str = "raw"
) -> tuple[list[LayerSet], dict[str, PooledFeatures], list[ProbeSource], dict[str, int]]:
    """The job's layer sets, every split's pooled inputs to them (one backbone pass per split, ever:
    cached; ``block_norm`` as ``pool_batch`` takes it), the sources the heads read, and the cache's counts."""
    backbone = job.backbone
    sets = list(job.layer_sets)
    blocks = blocks_needed(sets)
    pooled, cache = cached_splits(
        job, "features", timing, lambda images, key, how: cached_pooled(backbone, images, blocks, key, how, block_norm)
    )
    features: dict[str, PooledFeatures] = {}
    sources: list[ProbeSource] = []
    for name in SPLITS:
        features[name], sources = probe_inputs(pooled[name], feature_sources(backbone, blocks), sets)
        require_finite_features(features[name].features, 1, [f"layer set {s.layer_set.name} ({s.token})" for s in sources], name)
    return sets, features, sources, cache
