"""Time what intervals add to a finished cell: the bootstrap of every layer set's test score.

The worst case aimbench records: ImageNet's 50,000 test images x 26 layer sets (AIM-7B's blocks
and windows), 1,000 classes, at the records' 2,000 resamples, for each metric (ImageNet uses
top-1; mean-per-class accuracy and macro-F1 need per-class counts, so they cost more), and the
size of the predictions sidecar. Predictions are synthetic (80 % correct); the cost does not depend
on them. Usage: python benchmarks/bootstrap_cost.py [--examples N] [--layer-sets L] [--classes C]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from aimbench.stats.bootstrap import METRICS
from aimbench.stats.intervals import RESAMPLES, layer_intervals
from aimbench.store.predictions import sidecar_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=50_000)
    parser.add_argument("--layer-sets", type=int, default=26)
    parser.add_argument("--classes", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    labels = rng.integers(0, args.classes, args.examples)
    rows = np.where(
        rng.random((args.layer_sets, args.examples)) < 0.8, labels, rng.integers(0, args.classes, (args.layer_sets, args.examples))
    )
    print(f"{args.examples} test examples x {args.layer_sets} layer sets, {args.classes} classes, {RESAMPLES} resamples")
    for metric in METRICS:
        started, cpu = time.perf_counter(), time.process_time()
        layer_intervals(rows, labels, metric, args.classes)
        print(f"  {metric:>15}: {time.perf_counter() - started:6.2f} s wall, {time.process_time() - cpu:6.2f} s CPU")
    size = len(sidecar_bytes(np.arange(args.examples), labels, [(str(i), row) for i, row in enumerate(rows)], args.classes))
    print(f"  predictions sidecar: {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
