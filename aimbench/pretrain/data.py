"""Images for AIM pre-training: ``--data`` sources, their weighted mixture, and batches that are pure functions of the step.

The sources and their ``--data`` syntax are in ``aimbench.pretrain.sources``.

Determinism
-----------
Slot ``j`` of rank ``r`` at step ``s`` is global slot ``t = s * G + r * batch_size + j`` with
``G = batch_size * world_size``: ranks never share a slot, and a run resumed on a different number
of ranks (same global batch) consumes the same stream. A run with a streamed source
(``aimbench.pretrain.streaming``) counts slots per rank instead (``u = s * batch_size + j``), so
each rank reads only its own blocks of the stream; its other sources give rank ``r`` their draws
``r, r + world_size, ...``. Such a run is a function of the world size too. Sources take slots in a fixed low-discrepancy
interleave, so the number of earlier slots a source took (its draw number ``d``) is a closed form
of ``t``, never a counter carried between steps, workers or restarts. Draw ``d`` of a source with
``n`` images is position ``d mod n`` of epoch ``d // n``, through a keyed pseudo-random bijection
of ``range(n)`` (O(1) memory at any ``n``). Augmentation (``aimbench.pretrain.augment``) draws from a
generator seeded by ``t``.

An image that does not decode, or is over the pixel limit (``AIMBENCH_MAX_IMAGE_PIXELS``), is replaced
by the next position of the same permutation and counted;
only a source with ``MAX_TRIES`` unreadable images in a row is an error.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from aimbench.data.images import ImageTooLarge
from aimbench.errors import UserError, one_line_worker_errors
from aimbench.pretrain.augment import COLOR_JITTER_P, train_transform
from aimbench.pretrain.keyed_order import mix, permute
from aimbench.pretrain.sources import HOW, MAX_TRIES, READERS, DataSource, ImageSource, decode, listing
from aimbench.pretrain.streaming import StreamedImages

SHARE_SCALE = 1 << 32  # weights become integers so the slot interleave is exact integer arithmetic
ORDER, AUGMENT = 0, 1  # hash domains: per-epoch permutations, per-slot augmentation


class PretrainBatches(Dataset):
    """Map-style dataset whose item ``step`` is the whole batch for that global step on this rank.

    Returns ``(images [batch_size, 3, image_size, image_size] float32, unreadable images skipped)``;
    the item is a pure function of (seed, step, rank, world_size), see the module docstring.
    """

    def __init__(self, sources: list[DataSource], image_size: int, batch_size: int, seed: int,
                 mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225),
                 rank: int = 0, world_size: int = 1, color_jitter: float = COLOR_JITTER_P) -> None:  # fmt: skip
        if not sources:
            raise UserError(f"no --data source; {HOW}")
        if image_size < 1 or batch_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad batch geometry: image_size={image_size} batch_size={batch_size} rank={rank} world_size={world_size}")
        self.sources, self.image_size, self.batch_size, self.seed = list(sources), image_size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.transform = train_transform(image_size, mean, std, color_jitter)
        self.per_rank = any(source.kind == "stream" for source in self.sources)  # see "Determinism"
        self.shares = [max(1, round(source.weight * SHARE_SCALE)) for source in self.sources]
        self.remaining = [sum(self.shares[k:]) for k in range(len(self.shares))]
        self._readers: list[ImageSource] | None = None

    def __len__(self) -> int:
        return 2**62  # the stream is infinite; the trainer's sampler picks the steps

    @property
    def readers(self) -> list[ImageSource]:
        """Indexes are built on first use, so constructing the dataset stays cheap and nothing is listed twice."""
        if self._readers is None:
            self._readers = [READERS[source.kind](source.location) for source in self.sources]
        return self._readers

    def listing(self) -> list[dict[str, Any] | None]:
        """Per source, the images it holds as a resume compares them (:func:`~aimbench.pretrain.sources.listing`)."""
        return [listing(reader) for reader in self.readers]

    def prepare(self) -> None:
        """Index every source and decode one of its images now, in this process.

        Forked loader workers then inherit the indexes instead of each rebuilding them, and a source
        that is empty or unreadable fails here with a one-line error, not inside a worker.
        """
        for k in range(len(self.readers)):
            self._draw(k, 0)

    def _assign(self, slot: int) -> tuple[int, int]:
        """(source, draw number) of a global slot.

        Source k takes slot u of the slots left by sources before it iff ``floor(m u / M)`` steps up
        there (m: its share, M: the shares from k on), a Sturmian sequence: it then took exactly
        ``floor(m u / M)`` of the first u, which is its draw number, in closed form for any slot.
        """
        rest = slot
        for k in range(len(self.shares) - 1):
            share, remaining = self.shares[k], self.remaining[k]
            taken = share * rest // remaining
            if share * (rest + 1) // remaining > taken:
                return k, taken
            rest -= taken
        return len(self.shares) - 1, rest

    def _draw(self, k: int, draw: int) -> tuple[Image.Image, int]:
        """Draw ``draw`` of source k and how many unreadable candidates were passed over to reach it."""
        images = self.readers[k]
        failure = ""
        for missed in range(MAX_TRIES):
            index = self._index(k, draw, missed)
            try:
                return decode(images.read(index)), missed
            except ImageTooLarge as exc:  # over AIMBENCH_MAX_IMAGE_PIXELS: skipped and counted like an unreadable image
                failure = f"{images.name(index)}: {exc}"
            except UserError:  # the source itself failed (e.g. a stream that cannot be fetched): not one bad image
                raise
            except Exception as exc:  # any failure to read or decode untrusted bytes means "unreadable"
                failure = f"{images.name(index)}: {type(exc).__name__}: {exc}"
        raise UserError(f"--data {self.sources[k].location}: {MAX_TRIES} images in a row are unreadable "
                        f"(last: {failure}); check or remove this source")  # fmt: skip

    def _index(self, k: int, draw: int, missed: int) -> int:
        """The image of source k's draw ``draw``, or of the ``missed``-th candidate after it when earlier ones were unreadable."""
        images = self.readers[k]
        if isinstance(images, StreamedImages):
            return images.position(draw + missed, self.seed, k, self.rank, self.world_size)
        if self.per_rank:
            draw = draw * self.world_size + self.rank
        n = len(images)
        return permute((draw % n + missed) % n, n, mix(self.seed, ORDER, k, draw // n))

    def __getitem__(self, step: int) -> tuple[torch.Tensor, int]:
        if step < 0:
            raise IndexError(f"step {step} < 0")
        images = torch.empty(self.batch_size, 3, self.image_size, self.image_size)
        skipped = 0
        first = (int(step) * self.world_size + self.rank) * self.batch_size
        for j in range(self.batch_size):
            slot = first + j
            image, missed = self._draw(*self._assign(int(step) * self.batch_size + j if self.per_rank else slot))
            images[j] = self.transform(image, torch.Generator().manual_seed(mix(self.seed, AUGMENT, slot)))
            skipped += missed
        return images, skipped


def batch_loader(dataset: PretrainBatches, start_step: int, num_steps: int, workers: int) -> Iterator[tuple[torch.Tensor, int]]:
    """Batches ``start_step .. start_step + num_steps - 1`` in order, decoded by ``workers`` processes.

    Order and content do not depend on ``workers``: each item is computed from its step alone.
    The sources are indexed (and checked) here, before the first batch is asked for.
    """
    dataset.prepare()
    # its own generator: the loader's worker base seed would otherwise advance the global torch RNG
    loader = DataLoader(dataset, batch_size=None, sampler=range(start_step, start_step + num_steps), num_workers=workers,
                        persistent_workers=False, generator=torch.Generator().manual_seed(dataset.seed))  # fmt: skip
    return one_line_worker_errors(loader)
