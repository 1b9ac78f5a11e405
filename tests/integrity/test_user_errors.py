"""Every user error is one line before any work starts: a catalogue of bad inputs.

Each row runs the real ``aimbench`` command with one bad argument and must end in exactly one
``error: ...`` line on stderr, exit code 2, no traceback, and nothing written. The cases fail
while the command is still planning (no dataset and no model is loaded), so each costs about a
second. The pure helpers behind them (device parsing, the space estimate, the metrics reader,
the weights sniff) are tested directly below the catalogue.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image
from test_cli import assert_one_line_error

from aimbench.adapters.weight_sources import require_weights_format
from aimbench.cards.registry import Registry
from aimbench.devices import DeviceName, cuda_device_count, parse_device, unavailable
from aimbench.errors import UserError
from aimbench.launch.cells import plan_cells
from aimbench.launch.options import RunOptions
from aimbench.launch.preflight import FEATURE_BYTES, RECORD_BYTES, estimate_bytes, feature_bytes, images_of, require_space
from aimbench.pretrain.metrics_file import read_metrics

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False
GPUS = cuda_device_count()  # None: only torch can tell (ROCm)
EVAL = ("eval", "-b", "micro-cls", "-t", "digits", "--cards", "{cards}", "--results", "{tmp}/results", "--limit", "20")
FEATURES = ("features", "micro-cls", "-i", "{images}", "-o", "{tmp}/features.safetensors", "--cards", "{cards}")
PRETRAIN = ("pretrain", "aim-micro", "--data", "{images}", "--steps", "4", "--batch-size", "4", "--out", "{tmp}/run")
# a later occurrence of an option wins, so a row's extra arguments override the common ones
NO_GPU = pytest.mark.skipif(GPUS != 0, reason="this machine may have a CUDA GPU, so --device cuda may be valid here")
AS_ROOT = pytest.mark.skipif(ROOT, reason="root writes into a chmod 555 folder; the /sys row covers a read-only folder as root")
ON_LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/sys is Linux's")
PASSWD = pytest.mark.skipif(not Path("/etc/passwd").is_file(), reason="no /etc/passwd here")

CATALOGUE = [
    # eval: devices, numbers, folders, empty lists, weights
    pytest.param(EVAL + ("--device", "cuda"), "--device cuda but this machine has no CUDA GPU", marks=NO_GPU, id="eval-cuda-without-gpu"),
    pytest.param(
        EVAL + ("--device", "cuda:7"),
        "--device cuda:7 but this machine has",
        marks=pytest.mark.skipif(GPUS is None or GPUS > 7, reason="cuda:7 may exist"),
        id="eval-cuda7",
    ),
    pytest.param(EVAL + ("--device", "tpu"), "unknown --device 'tpu'", id="eval-tpu"),
    pytest.param(EVAL + ("--batch-size", "0"), "--batch-size must be at least 1, got 0", id="eval-batch-0"),
    pytest.param(EVAL + ("--workers", "-1"), "--workers must be at least 0, got -1", id="eval-workers-neg"),
    pytest.param(EVAL + ("--memory-gb", "0"), "--memory-gb must be a positive number", id="eval-memory-0"),
    pytest.param(EVAL + ("--results", "{file}"), "is a file, not a folder", id="eval-results-is-file"),
    pytest.param(EVAL + ("--results", "{file}/results"), "which is a file, not a folder", id="eval-results-inside-file"),
    pytest.param(EVAL + ("--results", "{readonly}/results"), "cannot write in", marks=AS_ROOT, id="eval-results-read-only"),
    pytest.param(EVAL + ("--results", "/sys/aimbench-results"), "cannot write in /sys", marks=ON_LINUX, id="eval-results-in-sys"),
    pytest.param(EVAL + ("-t", ""), "--tasks names no task", id="eval-tasks-empty"),
    pytest.param(EVAL + ("-t", ","), "--tasks names no task", id="eval-tasks-comma"),
    pytest.param(EVAL + ("-b", ""), "--backbone names no backbone", id="eval-backbone-empty"),
    pytest.param(EVAL + ("-b", ","), "--backbone names no backbone", id="eval-backbone-comma"),
    pytest.param(EVAL + ("--seed", ","), "--seed names no seed", id="eval-seed-comma"),
    pytest.param(EVAL + ("--layers", ""), "--layers names no layer set", id="eval-layers-empty"),
    pytest.param(EVAL + ("--weights", "{text}"), "not a safetensors or PyTorch", id="eval-weights-text"),
    pytest.param(EVAL + ("--weights", "/etc/passwd"), "not a safetensors or PyTorch", marks=PASSWD, id="eval-weights-passwd"),
    pytest.param(EVAL + ("--weights", "{folder}"), "is a folder without trunk.safetensors", id="eval-weights-folder"),
    pytest.param(EVAL + ("--cluster", "slurm", "--device", "tpu", "--dry-run"), "unknown --device 'tpu'", id="eval-slurm-tpu"),
    # features
    pytest.param(FEATURES + ("--device", "cuda"), "this machine has no CUDA GPU", marks=NO_GPU, id="features-cuda-without-gpu"),
    pytest.param(FEATURES + ("--device", "tpu"), "unknown --device 'tpu'", id="features-tpu"),
    pytest.param(FEATURES + ("--batch-size", "0"), "--batch-size must be at least 1", id="features-batch-0"),
    pytest.param(FEATURES + ("-o", "{folder}.safetensors"), "is a folder", id="features-output-is-folder"),
    pytest.param(FEATURES + ("-o", "{file}/f.safetensors"), "which is a file, not a folder", id="features-output-inside-file"),
    pytest.param(FEATURES + ("--weights", "{text}"), "not a safetensors or PyTorch", id="features-weights-text"),
    # pretrain: every numeric option's range, the device, the run folder
    pytest.param(PRETRAIN + ("--save-every", "0"), "--save-every must be at least 1, got 0", id="pretrain-save-every-0"),
    pytest.param(PRETRAIN + ("--lr", "-1"), "--lr must be a positive number, got -1.0", id="pretrain-lr-neg"),
    pytest.param(PRETRAIN + ("--lr", "nan"), "--lr must be a positive number, got nan", id="pretrain-lr-nan"),
    pytest.param(PRETRAIN + ("--steps", "0"), "--steps must be at least 1, got 0", id="pretrain-steps-0"),
    pytest.param(PRETRAIN + ("--batch-size", "0"), "--batch-size must be at least 1, got 0", id="pretrain-batch-0"),
    pytest.param(PRETRAIN + ("--workers", "-1"), "--workers must be at least 0, got -1", id="pretrain-workers-neg"),
    pytest.param(PRETRAIN + ("--image-size", "-14"), "--image-size must be at least 0, got -14", id="pretrain-image-size-neg"),
    pytest.param(PRETRAIN + ("--nodes", "0"), "--nodes must be at least 1, got 0", id="pretrain-nodes-0"),
    pytest.param(PRETRAIN + ("--tasks-per-node", "0"), "--tasks-per-node must be at least 1, got 0", id="pretrain-tasks-0"),
    pytest.param(PRETRAIN + ("--device", "cuda"), "this machine has no CUDA GPU", marks=NO_GPU, id="pretrain-cuda-without-gpu"),
    pytest.param(PRETRAIN + ("--device", "tpu"), "unknown --device 'tpu'", id="pretrain-tpu"),
    pytest.param(PRETRAIN + ("--out", "{file}"), "is a file, not a folder", id="pretrain-out-is-file"),
    pytest.param(PRETRAIN + ("--out", "{file}/run"), "which is a file, not a folder", id="pretrain-out-inside-file"),
    # export and report outputs
    pytest.param(("export", "--results", "{tmp}/results", "--out", "{file}"), "is a file, not a folder", id="export-out-is-file"),
    pytest.param(("export", "--results", "{tmp}/results", "--out", "{file}/tables"), "which is a file", id="export-out-inside-file"),
    pytest.param(("report", "--results", "{tmp}/results", "--html", "{file}"), "--html", id="report-html-is-file"),
]


@pytest.fixture
def places(tmp_path: Path, tiny_cards: Path) -> Iterator[dict[str, str]]:
    """What the catalogue's placeholders name: a plain file, a text file, an empty folder, images, a read-only folder."""
    (tmp_path / "plain").write_text("a file where a folder is expected\n")
    (tmp_path / "notes.pt").write_text("these are notes, not weights\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty.safetensors").mkdir()
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(np.full((24, 24, 3), 40 * i, np.uint8)).save(images / f"{i}.png")
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    yield {"tmp": str(tmp_path), "cards": str(tiny_cards), "file": str(tmp_path / "plain"), "text": str(tmp_path / "notes.pt"),
           "folder": str(tmp_path / "empty"), "images": str(images), "readonly": str(readonly)}  # fmt: skip
    readonly.chmod(0o755)


def files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


@pytest.mark.parametrize(("args", "fragment"), CATALOGUE)
def test_bad_input_is_one_line_before_any_work(places: dict[str, str], args: tuple[str, ...], fragment: str) -> None:
    tmp = Path(places["tmp"])
    before = files_under(tmp)
    proc = run_cli(*(arg.format(**places) for arg in args))
    assert_one_line_error(proc, fragment)
    assert files_under(tmp) == before  # no record, no run folder contents, no output file


def test_a_non_utf8_run_record_is_named(tmp_path: Path) -> None:
    runs = tmp_path / "results" / "runs"
    runs.mkdir(parents=True)
    bad = runs / "zz.json"
    bad.write_bytes(b'{"schema_version": 4, "backbone": "caf\xe9"}')
    assert_one_line_error(run_cli("report", "--results", str(tmp_path / "results")), str(bad), "not UTF-8")


def test_damage_before_the_last_metrics_line_stops_resume_at_once(places: dict[str, str]) -> None:
    run = Path(places["tmp"]) / "run"
    run.mkdir()
    text = '{"step": 0, "loss": 1.0}\n{"step": 1, "lo\n{"step": 2, "loss": 0.5}\n'
    (run / "metrics.jsonl").write_text(text)
    proc = run_cli(*(arg.format(**places) for arg in PRETRAIN), "--resume")
    assert_one_line_error(proc, str(run / "metrics.jsonl"), "line 2")
    assert (run / "metrics.jsonl").read_text() == text and sorted(p.name for p in run.iterdir()) == ["metrics.jsonl"]


def test_too_little_free_space_is_refused_before_any_work(places: dict[str, str]) -> None:
    """``shutil.disk_usage`` reports 1 KB free, in the real CLI's process: the plan needs more."""
    code = ("import collections, shutil, sys; from aimbench.cli import main; "
            "shutil.disk_usage = lambda path: collections.namedtuple('usage', 'total used free')(10**12, 10**12 - 1000, 1000); "
            "sys.argv = ['aimbench', *sys.argv[1:]]; main()")  # fmt: skip
    args = [arg.format(**places) for arg in EVAL]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "AIMBENCH_CACHE": f"{places['tmp']}/cache"})  # fmt: skip
    assert_one_line_error(proc, "not enough free space", "1.0 KB free")
    assert not (Path(places["tmp"]) / "results").exists()


# ---- the helpers behind the catalogue ----


def test_device_names_parse_without_torch_and_name_what_is_missing() -> None:
    assert parse_device("cuda:3") == DeviceName("cuda", 3) and str(parse_device("CPU")) == "cpu"
    for bad in ("tpu", "cuda:", "cuda:x", "cpu:0", "gpu"):
        with pytest.raises(UserError, match="unknown --device"):
            parse_device(bad)
    assert unavailable(DeviceName("cuda"), 0) == "--device cuda but this machine has no CUDA GPU; use cpu or auto"
    assert "has 2 CUDA GPU(s) (cuda:0 to cuda:1)" in (unavailable(DeviceName("cuda", 2), 2) or "")
    assert unavailable(DeviceName("cuda", 1), 2) is None and unavailable(DeviceName("cuda"), None) is None  # None: torch decides
    assert unavailable(DeviceName("cpu"), 0) is None


def test_the_space_estimate_is_images_times_blocks_times_poolings_times_dim_in_fp16(tiny_cards: Path, tmp_path: Path) -> None:
    registry = Registry.load([tiny_cards])
    spec = registry.backbone("micro-cls")  # 3 blocks, dim 32, poolings patch mean and cls
    assert images_of({"train": 1000, "test": 300}, None) == 1300 and images_of({"train": 1000, "test": 300}, 500) == 800
    assert feature_bytes(spec, 10, pooled_blocks=3, token_blocks=0) == 10 * 3 * 2 * 32 * FEATURE_BYTES
    assert feature_bytes(spec, 10, pooled_blocks=0, token_blocks=1) == 10 * 16 * 32 * FEATURE_BYTES  # 16 px / patch 4 = 4 x 4 tokens
    options = RunOptions(results_dir=tmp_path / "results", cache_dir=tmp_path / "cache")
    # linear and kNN share one cached copy of the features; each cell writes a record
    cells = [(cell, cell.identity(registry)) for cell in plan_cells(registry, ["micro-cls"], ["digits"], "linear,knn", limit=100)]
    images = images_of(registry.task("digits").expected_sizes, 100)
    blocks = 3  # the default layer spec reads every block
    assert estimate_bytes(cells, registry, options) == {options.results_dir: 2 * RECORD_BYTES,
                                                        options.cache_dir: feature_bytes(spec, images, blocks, 0)}  # fmt: skip
    (tmp_path / "cache" / "features" / "micro-cls").mkdir(parents=True)  # features may be cached: a lower bound counts none
    assert estimate_bytes(cells, registry, options)[options.cache_dir] == 0


def test_require_space_adds_up_folders_on_one_file_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(free=100))
    require_space({tmp_path / "a": 60, tmp_path / "b" / "c": 40})
    with pytest.raises(UserError, match="at least 101 B to .* which has 100 B free"):
        require_space({tmp_path / "a": 60, tmp_path / "b": 41})


def test_metrics_reader_drops_a_torn_last_line_and_names_damage_elsewhere(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    assert read_metrics(path) == []
    path.write_text('{"step": 0}\n{"step": 1}\n{"step": 2, "lo')
    assert read_metrics(path) == [{"step": 0}, {"step": 1}]
    path.write_bytes(b'{"step": 0}\n\n{"step": 1}\n{"st\xe9\n')  # torn inside a character, then a newline
    assert read_metrics(path) == [{"step": 0}, {"step": 1}]
    path.write_text('{"step": 0}\n\n[1, 2]\n{"step": 2}\n')
    with pytest.raises(UserError, match=r"metrics.jsonl: line 3 is not a JSON object"):
        read_metrics(path)


def test_a_resumed_run_rewrites_a_torn_metrics_file_whole(tmp_path: Path, places: dict[str, str]) -> None:
    import torch

    from aimbench.pretrain.recipe import PretrainConfig
    from aimbench.pretrain.sources import parse_data
    from aimbench.pretrain.trainer import train

    config = PretrainConfig("aim-micro", steps=4, batch_size=4, save_every=2)
    sources, run = parse_data(places["images"]), tmp_path / "run"
    train(config, sources, run, torch.device("cpu"), until=2)  # a kill after step 2's checkpoint ...
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 2, "loss": 0.')  # ... during the next append
    resumed = train(config, sources, run, torch.device("cpu"), resume=True)
    assert [m.step for m in resumed.history] == [2, 3]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("head", "weights"),
    [
        ((2).to_bytes(8, "little") + b"{}", True),  # the smallest safetensors file
        (b"PK\x03\x04" + bytes(12), True),  # torch.save's zip archive
        (b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8", True),  # legacy torch.save pickle
        (b"", False),
        (b"root:x:0:0:root:/root:/bin/bash\n", False),
        ((10**6).to_bytes(8, "little") + b"{}", False),  # a header longer than the file
    ],
)
def test_weights_are_recognised_from_their_first_bytes(tmp_path: Path, head: bytes, weights: bool) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(head)
    if weights:
        require_weights_format(path)
    else:
        with pytest.raises(UserError, match="cannot load weights file"):
            require_weights_format(path)
