"""Streamed pre-training data: Parquet image datasets read a row group at a time through fsspec.

The hub cannot be reached here, so the streams are ``file://`` URLs over Parquet files written by
``datasets`` (the hub's own format and metadata): the same listing, footers, row-group reads,
cache and order as ``hf://``. What differs for the hub, resolving the revision, is tested offline.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image

from aimbench.errors import UserError
from aimbench.pretrain import streaming
from aimbench.pretrain.data import PretrainBatches
from aimbench.pretrain.recipe import PretrainConfig
from aimbench.pretrain.sources import parse_data
from aimbench.pretrain.stream_cache import STALE_LOCK_S, BlockCache
from aimbench.pretrain.streaming import StreamedImages
from aimbench.pretrain.trainer import train


def _png(i: int) -> bytes:
    rng = np.random.default_rng(i)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_parquet(folder: Path, name: str, images: list[bytes | None], rows_per_group: int = 5) -> Path:
    """A Parquet file as ``datasets`` writes it for the hub: an Image feature, labels beside it, row groups of ``rows_per_group``."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    table = datasets.Dataset.from_dict({"image": [None if b is None else {"bytes": b, "path": None} for b in images], "label": list(range(len(images)))},
                                       features=features)  # fmt: skip
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(str(path), batch_size=rows_per_group)
    return path


@pytest.fixture
def stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, list[bytes]]:
    """A dataset of 40 train images in 2 files x 4 row groups of 5 (and a test split that must be ignored)."""
    monkeypatch.setenv("AIMBENCH_CACHE", str(tmp_path / "cache"))
    images = [_png(i) for i in range(40)]
    root = tmp_path / "hub" / "data"
    write_parquet(root, "train-00000-of-00002.parquet", images[:20])
    write_parquet(root, "train-00001-of-00002.parquet", images[20:])
    write_parquet(root, "test-00000-of-00001.parquet", [_png(100 + i) for i in range(10)])
    return f"file://{tmp_path / 'hub'}", images


def test_a_parquet_dataset_streams_its_train_split_by_row_groups(stream: tuple[str, list[bytes]]) -> None:
    url, images = stream
    [source] = parse_data(url)
    assert (source.kind, source.location) == ("stream", url)
    reader = StreamedImages(url)
    assert len(reader) == 40 and [f.rsplit("/", 1)[1] for f in reader.index.files] == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    assert reader.index.block_rows.tolist() == [5] * 8 and reader.index.column == "image"
    assert [reader.read(i) for i in range(40)] == images
    assert reader.name(23).endswith("train-00001-of-00002.parquet row group 0 row 3")
    assert len(StreamedImages(f"{url}/data/*.parquet")) == 50  # a glob takes what it names, the test split too


def test_each_rank_reads_only_its_blocks_and_every_image_once_an_epoch(
    stream: tuple[str, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = stream
    monkeypatch.setattr(streaming, "WINDOW_BLOCKS", 2)
    reader = StreamedImages(url)
    epochs = {rank: [[reader.position(d, 0, 0, rank, 2) for d in range(e * 20, e * 20 + 20)] for e in range(2)] for rank in (0, 1)}
    for rank in (0, 1):
        first, second = epochs[rank]
        assert len(set(first)) == 20 and set(first) == set(second) and first != second  # each epoch: its 20 images, reshuffled
        blocks = {index // 5 for index in first}
        assert len(blocks) == 4  # its four blocks, dealt once
        assert len({index // 5 for index in first[:10]}) == 2  # a window of two blocks at a time: each fetched once an epoch
    assert set(epochs[0][0]).isdisjoint(epochs[1][0]) and set(epochs[0][0]) | set(epochs[1][0]) == set(range(40))
    assert epochs[0][0] == [reader.position(d, 0, 0, 0, 2) for d in range(20)]  # a pure function of the draw
    assert epochs[0][0] != [reader.position(d, 1, 0, 0, 2) for d in range(20)]  # and of the seed
    with pytest.raises(UserError, match="8 row group"):
        reader.position(0, 0, 0, 0, 9)


def test_blocks_are_fetched_once_per_machine_and_the_cache_keeps_its_budget(stream: tuple[str, list[bytes]], tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    url, images = stream
    assert StreamedImages(url).read(7) == images[7]
    another = StreamedImages(url)  # as another rank or loader worker would: same disk cache, its own process state

    def refuse(block: int) -> list[bytes]:
        raise AssertionError("fetched a block the cache holds")

    monkeypatch.setattr(another, "_fetch", refuse)
    assert another.read(8) == images[8] and another.read(9) == images[9]
    cache = BlockCache(tmp_path / "blocks", budget_bytes=3000)
    for i in range(6):
        cache.get(f"b{i}", lambda i=i: [bytes(1000)])
    kept = sorted(p.name for p in (tmp_path / "blocks").glob("*.arrow"))
    assert sum(p.stat().st_size for p in (tmp_path / "blocks").glob("*.arrow")) <= 3000 and "b5.arrow" in kept
    stale = tmp_path / "blocks" / "b9.lock"  # left by a process killed mid-fetch
    stale.touch()
    os.utime(stale, (0, 0))
    assert cache.get("b9", lambda: [b"ok"])[0].as_py() == b"ok" and not stale.exists()
    assert STALE_LOCK_S >= 60


def test_an_unreadable_row_is_skipped_and_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIMBENCH_CACHE", str(tmp_path / "cache"))
    rows: list[bytes | None] = [_png(i) for i in range(10)]
    rows[3], rows[6] = b"not an image", None
    write_parquet(tmp_path / "d", "train.parquet", rows)
    batches = PretrainBatches(parse_data(f"file://{tmp_path / 'd' / 'train.parquet'}"), 16, 10, seed=0)
    images, skipped = batches[0]
    assert images.shape == (10, 3, 16, 16) and torch.isfinite(images).all() and skipped == 2


def test_pretraining_on_a_stream_mixed_with_a_folder_resumes_exactly_and_records_its_data(
    stream: tuple[str, list[bytes]], tmp_path: Path
) -> None:
    url, images = stream
    folder = tmp_path / "folder"
    folder.mkdir()
    for i, data in enumerate(images[:8]):
        (folder / f"{i}.png").write_bytes(data)
    sources = parse_data(f"{url}=3,{folder}=1")
    config = PretrainConfig("aim-micro", steps=6, batch_size=4, save_every=3, lr=3e-3)
    cpu = torch.device("cpu")
    train(config, sources, tmp_path / "a", cpu)
    train(config, sources, tmp_path / "b", cpu, until=3)
    train(config, sources, tmp_path / "b", cpu, resume=True, workers=2)
    lines = [(tmp_path / run / "metrics.jsonl").read_text().splitlines() for run in ("a", "b")]
    assert [json.loads(x)["loss"] for x in lines[0]] == [json.loads(x)["loss"] for x in lines[1]] and len(lines[0]) == 6
    recorded = json.loads((tmp_path / "a" / "config.json").read_text())
    assert [(d["kind"], d["location"], d["weight"]) for d in recorded["data"]] == [("stream", url, 0.75), ("folder", str(folder), 0.25)]
    assert recorded["stream_world_size"] == 1
    with pytest.raises(UserError, match=r"different configuration \(data\)"):
        train(config, parse_data(f"{url}=1,{folder}=1"), tmp_path / "b", cpu, resume=True)


def test_a_hub_stream_offline_or_a_bad_url_is_one_line(tmp_path: Path) -> None:
    run = ("pretrain", "aim-micro", "--steps", "2", "--batch-size", "4", "--device", "cpu", "--out", str(tmp_path / "run"))
    offline = run_cli(*run, "--data", "hf://datasets/apple/DataCompDR-12M", env={"AIMBENCH_CACHE": str(tmp_path / "cache")})
    assert offline.returncode == 2 and offline.stderr.count("\n") == 1, offline.stderr
    assert "cannot resolve it on the Hugging Face hub" in offline.stderr and "huggingface-cli download" in offline.stderr
    empty = run_cli(*run, "--data", f"file://{tmp_path}/nothing/*.parquet", env={"AIMBENCH_CACHE": str(tmp_path / "cache")})
    assert empty.returncode == 2 and "no .parquet files there" in empty.stderr and empty.stderr.count("\n") == 1
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.e2e
def test_two_ranks_stream_through_torchrun_and_a_resume_on_one_rank_is_refused(stream: tuple[str, list[bytes]], tmp_path: Path) -> None:
    url, _ = stream
    out = tmp_path / "run"
    common = ("-m", "aimbench", "pretrain", "aim-micro", "--data", url, "--steps", "4", "--batch-size", "8", "--save-every", "2",
              "--out", str(out), "--workers", "0", "--device", "cpu")  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-port", "29683", *common, "--steps", "2"],
                          capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "config.json").read_text())["stream_world_size"] == 2
    alone = run_cli(*common[2:], "--resume", env={"AIMBENCH_CACHE": env.get("AIMBENCH_CACHE", "")})
    assert alone.returncode == 2 and "started on 2 rank(s); it resumes exactly only on as many, not 1" in alone.stderr


def test_a_block_that_cannot_be_fetched_stops_the_run_in_one_line_instead_of_skipping_images(stream: tuple[str, list[bytes]], tmp_path: Path,
                                                                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    url, _ = stream
    monkeypatch.setattr(streaming, "FETCH_BACKOFF_S", 0.01)
    config = PretrainConfig("aim-micro", steps=4, batch_size=4, save_every=2)
    train(config, parse_data(url), tmp_path / "run", torch.device("cpu"), until=1)  # indexes the stream, fetches a block
    for parquet in (tmp_path / "hub" / "data").glob("train-*.parquet"):
        parquet.write_bytes(bytes(parquet.stat().st_size))  # the storage fails under a running job; the listing (and index) stay
    with pytest.raises(UserError) as info:
        train(config, parse_data(url), tmp_path / "run", torch.device("cpu"), resume=True, workers=2)
    message = str(info.value)
    assert "cannot fetch" in message and "after 4 tries" in message and "--resume" in message and "\n" not in message


def test_a_hub_url_is_pinned_to_the_commit_its_revision_names_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """The two hub calls are replaced (no route to the hub here); what is checked is what pin() asks and builds."""
    from types import SimpleNamespace

    from huggingface_hub import HfApi
    from huggingface_hub.hf_file_system import HfFileSystem, HfFileSystemResolvedRepositoryPath

    asked = []
    monkeypatch.setattr(HfFileSystem, "resolve_path", lambda self, path: HfFileSystemResolvedRepositoryPath("dataset", "o/n", "v2", "data"))
    monkeypatch.setattr(HfApi, "repo_info", lambda self, repo_id, repo_type, revision: asked.append((repo_id, repo_type, revision))
                        or SimpleNamespace(sha="c0ffee" * 6 + "beef"))  # fmt: skip
    assert streaming.pin("hf://datasets/o/n@v2/data") == "hf://datasets/o/n@" + "c0ffee" * 6 + "beef/data"
    assert asked == [("o/n", "dataset", "v2")]
    assert streaming.pin("s3://bucket/laion") == "s3://bucket/laion"  # other URLs have no revision to pin


def test_a_hub_bucket_url_is_refused_in_one_line_since_it_has_no_revision_to_pin(monkeypatch: pytest.MonkeyPatch) -> None:
    """``hf://buckets/...`` resolves to a bucket path (no repo_id, no revision), not a repository path."""
    from types import SimpleNamespace

    from huggingface_hub.hf_file_system import HfFileSystem

    monkeypatch.setattr(HfFileSystem, "resolve_path", lambda self, path: SimpleNamespace(root="buckets/o/b", path="data"))
    with pytest.raises(UserError) as info:
        streaming.pin("hf://buckets/o/b/data")
    message = str(info.value)
    assert "cannot resolve it on the Hugging Face hub" in message and "bucket" in message and "\n" not in message
