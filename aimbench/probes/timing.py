"""Where a probe run's time went: feature extraction per split, head training, evaluation, and
the backbone forwards inside them; the record's ``timing`` (``aimbench.store.schema``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aimbench.adapters.base import Backbone


@dataclass
class SplitTiming:
    """One split's eval-crop features (pooled, or token maps): seconds, and images through the backbone."""

    seconds: float = 0.0
    images: int = 0  # 0: every block came from the feature cache


def _seconds(value: float) -> float:
    return round(float(value), 3)


@dataclass
class Timing:
    """Where a probe run's time went, in seconds of ``time.perf_counter``; ``as_record`` adds the
    cell's loading and total and is the record's ``timing`` (``aimbench.store.schema``)."""

    extraction: dict[str, SplitTiming] = field(default_factory=dict)  # per split, in order
    heads_s: float = 0.0  # training the heads (online modes: with the backbone forwards of the augmented views)
    evaluation_s: float = 0.0  # scoring val and test (kNN: the whole neighbour search; released heads: their forwards)
    forward_s: float | None = None  # of heads_s + evaluation_s, the time inside backbone forwards; None: none ran there

    @contextmanager
    def split(self, name: str) -> Iterator[Callable[[int], None]]:
        """Time one split's extraction; the yielded callable counts images as batches go through the backbone."""
        timing = self.extraction.setdefault(name, SplitTiming())
        started = time.perf_counter()

        def count(images: int) -> None:
            timing.images += images

        try:
            yield count
        finally:
            timing.seconds += time.perf_counter() - started

    @contextmanager
    def heads_then_evaluation(self, on_progress: Callable[[int], None]) -> Iterator[Callable[[int], None]]:
        """Split one call that trains heads and then scores them: it yields ``on_progress`` (the
        training's epoch or step callback) wrapped, and the time after its last call is evaluation
        (a run resumed past its last step trains nothing here, so all of it is)."""
        started = time.perf_counter()
        trained = [started]

        def progress(done: int) -> None:
            on_progress(done)
            trained[0] = time.perf_counter()

        try:
            yield progress
        finally:
            self.heads_s += trained[0] - started
            self.evaluation_s += time.perf_counter() - trained[0]

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.evaluation_s += time.perf_counter() - started

    @contextmanager
    def forwards(self, backbone: Backbone) -> Iterator[None]:
        """Add the time spent inside ``backbone.forward_layers`` while the block runs to ``forward_s``
        (wrapped on the instance, then restored). On CUDA each timed forward waits for its kernels,
        so the number is the forward's, not its launch's."""
        own = vars(backbone).get("forward_layers")  # an instance's own wrapper (a test's counter) stays in place
        original = backbone.forward_layers
        synchronize = None
        if backbone.device.type == "cuda":
            import torch

            synchronize = torch.cuda.synchronize

        def timed(images: Any, layers: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(images, layers)
            finally:
                if synchronize is not None:
                    synchronize(backbone.device)
                self.forward_s = (self.forward_s or 0.0) + time.perf_counter() - started

        backbone.forward_layers = timed  # type: ignore[method-assign]
        try:
            yield
        finally:
            if own is None:
                del backbone.forward_layers  # the class's method again
            else:
                backbone.forward_layers = own  # type: ignore[method-assign]

    def as_record(self, load_s: float, total_s: float) -> dict[str, Any]:
        """The record's ``timing``: seconds per phase, images extracted (0: every split cached) and images/s."""
        images = sum(split.images for split in self.extraction.values())
        extracting = sum(split.seconds for split in self.extraction.values() if split.images)
        return {
            "load_s": _seconds(load_s),
            "extraction_s": _seconds(sum(split.seconds for split in self.extraction.values())),
            "extraction_images": images,
            "extraction_images_per_s": round(images / extracting, 1) if images and extracting > 0 else None,
            "extraction_splits": {name: {"s": _seconds(s.seconds), "images": s.images} for name, s in self.extraction.items()},
            "heads_s": _seconds(self.heads_s),
            "evaluation_s": _seconds(self.evaluation_s),
            "backbone_forward_s": None if self.forward_s is None else _seconds(self.forward_s),
            "total_s": _seconds(total_s),
        }
