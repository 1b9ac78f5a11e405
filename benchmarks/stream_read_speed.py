"""Pre-training batches read from a stream against the same images in a folder, in one run.

The same JPEGs are written twice: as files in a folder, and as a Parquet dataset the way
``datasets`` writes one for the Hugging Face hub (row groups of 100), read back as a stream
through a ``file://`` URL (``aimbench.pretrain.streaming``: footers, row-group fetches, the disk
block cache). The script times one cold pass over the stream (every block fetched into an empty
cache), then batches from the folder and from the warm stream alternately (A, B, A, B, ...), and
prints images/s for each and the ratio stream / folder: how much the stream path costs beside
decoding and augmenting, which both share. A network adds its own fetch time to the cold pass only.

Usage: python benchmarks/stream_read_speed.py [--images 3000] [--batch-size 64] [--batches 30] [--image-size 224]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from aimbench.pretrain.data import PretrainBatches
from aimbench.pretrain.sources import parse_data


def _jpeg(rng: np.random.Generator, size: int) -> bytes:
    yy, xx = np.mgrid[0:size, 0:size]
    base = (np.sin(xx / rng.uniform(3, 30)) + np.cos(yy / rng.uniform(3, 30)) + 2) * 60
    pixels = np.stack([base, np.roll(base, int(rng.integers(size)), axis=0), 255 - base], axis=-1) + rng.normal(0, 10, (size, size, 3))
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _write(root: Path, count: int, size: int) -> tuple[Path, str]:
    import datasets

    rng = np.random.default_rng(0)
    images = [_jpeg(rng, size) for _ in range(count)]
    folder = root / "folder"
    folder.mkdir()
    for i, data in enumerate(images):
        (folder / f"{i:06d}.jpg").write_bytes(data)
    table = datasets.Dataset.from_dict(
        {"image": [{"bytes": b, "path": None} for b in images]}, features=datasets.Features({"image": datasets.Image()})
    )
    (root / "hub" / "data").mkdir(parents=True)
    table.to_parquet(str(root / "hub" / "data" / "train-00000-of-00001.parquet"), batch_size=100)
    return folder, f"file://{root / 'hub'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--source-size", type=int, default=256, help="side of the written JPEGs")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        os.environ["AIMBENCH_CACHE"] = str(root / "cache")
        folder, url = _write(root, args.images, args.source_size)

        def batches(source: str) -> PretrainBatches:
            return PretrainBatches(parse_data(source), args.image_size, args.batch_size, seed=0)

        stream, files = batches(url), batches(str(folder))
        epoch_steps = args.images // args.batch_size
        start = time.perf_counter()
        for step in range(epoch_steps):  # cold: every block is fetched into the empty cache once
            stream[step]
        cold = epoch_steps * args.batch_size / (time.perf_counter() - start)
        times: dict[str, list[float]] = {"folder": [], "stream": []}
        for step in range(args.batches):
            for name, dataset in (("folder", files), ("stream", stream)):
                start = time.perf_counter()
                dataset[epoch_steps + step]  # the next epoch: warm for the stream
                times[name].append(time.perf_counter() - start)
    rates = {name: args.batch_size / statistics.median(seconds) for name, seconds in times.items()}
    print(f"{args.images} JPEGs of {args.source_size} px -> batches of {args.batch_size} at {args.image_size} px, one process")
    print(f"stream, cold cache (first epoch): {cold:8.1f} images/s")
    for name, rate in rates.items():
        print(f"{name + ', warm:':32s} {rate:8.1f} images/s (median of {args.batches} batches)")
    print(f"ratio stream / folder: {rates['stream'] / rates['folder']:.3f}  (1.0: streaming costs nothing beside decoding)")


if __name__ == "__main__":
    main()
