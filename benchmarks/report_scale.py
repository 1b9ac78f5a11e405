"""Time ``aimbench report`` over many records: the Parquet cache against reading every JSON file.

Writes N synthetic records (default 100,000: 50 backbones x 15 tasks x 4 probes x 33 seeds,
each with 24 per-block results and their stored 95 % intervals, and a small head list, ~6 KB,
like a real record without its full grid; no prediction sidecars, so the 33 seeds of a cell
show ``±?``: the report must not open a file to find that out) into a scratch results folder, then times, in one run:

  1. the first report (cold: every record parsed into the cache),
  2. a second report (warm: the cache is current; the issue's target is under 2 s here),
  3. a report after 100 new records (incremental: only those are parsed),
  4. the way without a cache: DuckDB ``read_json`` over every file (on a sample, scaled up,
     unless --full-direct), and prints the ratios.

Reports 1-3 run the real CLI (a new process each, as a user runs it), so the times include
Python start-up and imports. Usage: python benchmarks/report_scale.py [--records N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from aimbench.store.cache import list_records
from aimbench.store.records import record_text
from aimbench.store.schema import RECORD_COLUMNS, SCHEMA_VERSION

PROBES = ("linear", "attentive", "knn", "official:last")


def synthetic_record(index: int, backbones: int = 50, tasks: int = 15) -> dict:
    backbone, task = f"backbone-{index % backbones:02d}", f"task-{(index // backbones) % tasks:02d}"
    probe = PROBES[(index // (backbones * tasks)) % len(PROBES)]
    seed = index // (backbones * tasks * len(PROBES))
    layers = [
        {"layer_set": str(b), "blocks": [b], "layer": b, "token": "cls", "hparams": {"lr": 0.01, "weight_decay": 0.0},
         "val_score": 0.5 + b / 100 + (index % 7) / 1000, "test_score": 0.48 + b / 100, "test_secondary": {},
         "test_interval": {"low": 0.46 + b / 100, "high": 0.50 + b / 100}}
        for b in range(24)
    ]  # fmt: skip
    best, last = layers[17], layers[-1]
    return {
        "schema_version": SCHEMA_VERSION, "record_id": f"{index:032x}", "created_at": "2026-11-22T10:00:00.000000+00:00",
        "cell_key": f"{backbone}|{task}|{probe}|{seed}", "config_hash": f"{index:012x}", "backbone": backbone, "task": task,
        "probe": probe, "seed": seed, "weights_id": "synthetic", "weights_sha256": "0" * 64, "dtype": "bf16",
        "dataset_source": "synthetic", "n_train": 1000, "n_val": 100, "n_test": 500, "layers_spec": "all", "image_limit": None,
        "metric": "top1", "secondary_metrics": [],
        **{f"best_{k}": v for k, v in best.items()}, **{f"last_{k}": v for k, v in last.items()},
        "layers": layers, "heads": [{"layer_set": "0", "token": "cls", "hparams": {"lr": 0.01}, "val_score": 0.5}] * 4,
        "interval": {"method": "bootstrap-percentile", "level": 0.95, "resamples": 2000, "seed": 0},
        "probe_config": {"kind": probe, "epochs": 100}, "environment": {"aimbench_version": "bench"}, "wall_time_s": 1.0,
    }  # fmt: skip


def write_records(runs: Path, start: int, count: int) -> None:
    runs.mkdir(parents=True, exist_ok=True)
    for index in range(start, start + count):
        record = synthetic_record(index)
        name = f"{record['cell_key'].replace('|', '__').replace(':', '-')}__{record['config_hash']}.json"
        (runs / name).write_text(record_text(record), encoding="utf-8")  # sealed with its checksum, as the store writes it


def timed_report(results: Path) -> float:
    script = Path(sys.executable).with_name("aimbench")
    started = time.perf_counter()
    proc = subprocess.run([str(script), "report", "--results", str(results), "--format", "csv"], capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"report failed: {proc.stderr.strip()}")
    return elapsed


def direct_read(results: Path, sample: int | None) -> tuple[float, int]:
    """DuckDB read_json over the record files themselves (no cache), on ``sample`` files or all."""
    names = sorted(list_records(results / "runs").names)
    files = [str(results / "runs" / n) for n in (names[:sample] if sample else names)]
    con = duckdb.connect()
    started = time.perf_counter()
    con.execute(
        "CREATE TABLE runs AS SELECT * FROM read_json($files, format='auto', columns=$columns, maximum_object_size=16777216)",
        {"files": files, "columns": RECORD_COLUMNS},
    )
    return time.perf_counter() - started, len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--direct-sample", type=int, default=10_000, help="files the no-cache way reads (time scaled to all)")
    parser.add_argument("--full-direct", action="store_true", help="time the no-cache way on every file")
    parser.add_argument("--keep", type=Path, default=None, help="results folder to reuse/keep (default: a temporary one)")
    args = parser.parse_args()

    results = args.keep or Path(tempfile.mkdtemp(prefix="aimbench-scale-"))
    runs = results / "runs"
    try:
        have = len(list_records(runs).names) if runs.is_dir() else 0
        started = time.perf_counter()
        write_records(runs, have, max(args.records - have, 0))
        size = sum(entry.stat().st_size for entry in os.scandir(runs)) / 2**20
        count = len(list_records(runs).names)
        print(f"{count} records ({size:.0f} MiB) in {results} (written in {time.perf_counter() - started:.0f} s)")
        shutil.rmtree(results / ".cache", ignore_errors=True)

        cold = timed_report(results)
        warm = min(timed_report(results) for _ in range(3))
        write_records(runs, args.records, 100)
        incremental = timed_report(results)
        direct, read = direct_read(results, None if args.full_direct else args.direct_sample)
        direct_all = direct * len(list_records(runs).names) / read

        print(f"report, cold cache (parse all):      {cold:7.2f} s")
        print(f"report, warm cache (best of 3):      {warm:7.2f} s   target < 2 s: {'met' if warm < 2 else 'MISSED'}")
        print(f"report, +100 records (incremental):  {incremental:7.2f} s")
        scope = "measured" if args.full_direct or read >= args.records else f"scaled from {read} files"
        print(f"no cache, read_json over every file: {direct_all:7.2f} s   ({scope}; parsing only, no report)")
        print(f"ratio no-cache / warm: {direct_all / warm:.1f}x   no-cache / cold: {direct_all / cold:.1f}x")
    finally:
        if args.keep is None:
            shutil.rmtree(results, ignore_errors=True)


if __name__ == "__main__":
    main()
