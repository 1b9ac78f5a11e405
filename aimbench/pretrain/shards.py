"""Writing images into a WebDataset tar shard: how a labelled dataset becomes pre-training data.

Pre-training ignores labels, so a shard holds only ``NNNNNN.png`` members. The demo turns the
digits task's train split into one, and ``benchmarks/pretrain_learns.py`` Fashion-MNIST's train
images; users with an image folder can pass the folder to ``--data`` directly.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from aimbench.atomic import atomic_write


def write_tar_shard(images: Iterable[Image.Image], path: Path) -> int:
    """Write ``images`` as PNG members of one uncompressed tar, atomically; returns how many."""
    count = 0

    def write(handle) -> None:
        nonlocal count
        with tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for count, image in enumerate(images, start=1):
                buffer = io.BytesIO()
                image.convert("RGB").save(buffer, format="PNG")
                info = tarfile.TarInfo(f"{count - 1:06d}.png")
                info.size = buffer.tell()
                buffer.seek(0)
                tar.addfile(info, buffer)

    atomic_write(path, write)
    return count
