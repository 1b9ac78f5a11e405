"""The training loop: exact resume, NaN stops, DDP on two gloo processes, and the CLI round trip to eval."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image

from aimbench.adapters.weights import file_metadata, load_state_dict_file
from aimbench.distributed import World
from aimbench.errors import UserError
from aimbench.pretrain.objective import AimPretrainModel
from aimbench.pretrain.recipe import PretrainConfig
from aimbench.pretrain.sources import parse_data
from aimbench.pretrain.trainer import train

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 small images with structure (gradients and blocks), labels absent: a pre-training folder."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(40):
        yy, xx = np.mgrid[0:24, 0:24]
        base = (np.sin(xx / (2 + i % 5)) + np.cos(yy / (3 + i % 3)) + 2) * 60
        pixels = np.stack([base, np.roll(base, i, axis=0), 255 - base], axis=-1) + rng.normal(0, 8, (24, 24, 3))
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / f"img_{i:02d}.png")
    return root


def config(**overrides) -> PretrainConfig:
    return PretrainConfig(**{"preset": "aim-micro", "steps": 20, "batch_size": 8, "save_every": 5, **overrides})


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_twenty_steps_equal_ten_then_resume_then_ten(images: Path, tmp_path: Path) -> None:
    sources = parse_data(str(images))
    straight = train(config(lr=3e-3), sources, tmp_path / "a", CPU)
    first = train(config(lr=3e-3), sources, tmp_path / "b", CPU, until=10)
    assert [m.step for m in first.history] == list(range(10)) and not (tmp_path / "b" / "trunk.safetensors").exists()
    resumed = train(config(lr=3e-3), sources, tmp_path / "b", CPU, resume=True, workers=2)  # workers change nothing
    assert [m.step for m in resumed.history] == list(range(10, 20))
    assert losses(tmp_path / "a") == losses(tmp_path / "b")  # bit for bit, and no duplicated metric lines
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    exported = [load_state_dict_file(tmp_path / run / "trunk.safetensors") for run in ("a", "b")]
    assert exported[0].keys() == exported[1].keys() and all(torch.equal(exported[0][k], exported[1][k]) for k in exported[0])
    assert (tmp_path / "a" / "trunk.safetensors").read_bytes() == (tmp_path / "b" / "trunk.safetensors").read_bytes()  # same sha256
    curve = losses(tmp_path / "a")
    assert sum(curve[-5:]) < sum(curve[:5])  # it learns
    assert (tmp_path / "a" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    recorded = json.loads((tmp_path / "a" / "config.json").read_text())
    assert recorded["effective_lr"] == 3e-3 and recorded["base_lr"] == 1e-3 and recorded["lr_scaling"] == "none"
    assert (recorded["warmup_start_lr"], recorded["ln_eps"], recorded["color_jitter"]) == (1e-6, 1e-5, 0.8)
    assert file_metadata(tmp_path / "a" / "trunk.safetensors")["ln_eps"] == "1e-05"  # what eval builds the trunk with


def test_a_nan_loss_stops_every_step_after_it_and_keeps_the_last_checkpoint(images: Path, tmp_path: Path, monkeypatch) -> None:
    calls = {"n": 0}
    real = AimPretrainModel.forward

    def poisoned(self, images, prefix):  # the 8th step's loss is NaN
        calls["n"] += 1
        loss = real(self, images, prefix)
        return loss * float("nan") if calls["n"] == 8 else loss

    monkeypatch.setattr(AimPretrainModel, "forward", poisoned)
    with pytest.raises(UserError, match=r"the loss became nan at step 7; .*last good checkpoint \(step 5\)"):
        train(config(), parse_data(str(images)), tmp_path / "run", CPU)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 5
    assert [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == list(range(7))


def test_runs_are_not_overwritten_and_resume_needs_the_same_settings(images: Path, tmp_path: Path) -> None:
    sources = parse_data(str(images))
    train(config(steps=4), sources, tmp_path / "run", CPU, until=2)
    with pytest.raises(UserError, match="already holds a run; pass --resume"):
        train(config(steps=4), sources, tmp_path / "run", CPU)
    with pytest.raises(UserError, match=r"different configuration \(effective_lr, lr\)"):
        train(config(steps=4, lr=0.5), sources, tmp_path / "run", CPU, resume=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, images: str, out: str, result: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    outcome = train(config(steps=4, save_every=2), parse_data(images), Path(out), CPU, World(rank, 2, rank))
    torch.save({"state": outcome.model.state_dict(), "losses": [m.loss for m in outcome.history]}, f"{result}/rank{rank}.pt")


@pytest.mark.e2e
def test_ddp_on_two_gloo_processes_keeps_ranks_in_sync(images: Path, tmp_path: Path) -> None:
    torch.multiprocessing.spawn(_rank, args=(_free_port(), str(images), str(tmp_path / "run"), str(tmp_path)), nprocs=2, join=True)
    zero, one = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for name, tensor in zero["state"].items():
        assert torch.equal(tensor, one["state"][name]), name  # gradients were averaged: identical weights
    assert zero["losses"] != one["losses"]  # each rank saw its own share of the batch
    assert (tmp_path / "run" / "trunk.safetensors").is_file() and len(losses(tmp_path / "run")) == 4  # rank 0 writes once


@pytest.mark.e2e
def test_cli_pretrains_then_eval_reads_the_run_directory(images: Path, tmp_path: Path) -> None:
    run = tmp_path / "tiny"
    proc = run_cli("pretrain", "aim-tiny", "--data", str(images), "--steps", "6", "--batch-size", "8", "--out", str(run),
                   "--workers", "0", "--device", "cpu", "--save-every", "3")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "evaluate with: aimbench eval --backbone aim-tiny --weights" in proc.stdout
    again = run_cli("pretrain", "aim-tiny", "--data", str(images), "--steps", "6", "--batch-size", "8", "--out", str(run))
    assert again.returncode == 2 and again.stderr.startswith("error: ") and "--resume" in again.stderr
    results = tmp_path / "results"
    evaluated = run_cli("eval", "-b", "aim-tiny", "--weights", str(run), "-t", "digits", "--limit", "60", "--epochs", "2", "--protocol", "aim-v1",
                        "--results", str(results))  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    [record] = [json.loads(p.read_text()) for p in (results / "runs").glob("*.json")]
    assert record["weights_id"] == "file:trunk.safetensors"
    assert record["weights_sha256"] == hashlib.sha256((run / "trunk.safetensors").read_bytes()).hexdigest()


def test_the_cli_warns_on_stderr_when_linear_scaling_leaves_almost_no_lr(tmp_path: Path) -> None:
    proc = run_cli("pretrain", "aim-micro", "--data", str(tmp_path / "absent"), "--batch-size", "32", "--lr-scaling", "linear",
                   "--out", str(tmp_path / "run"), "--device", "cpu")  # fmt: skip
    warning = proc.stderr.splitlines()[0]
    assert warning.startswith("WARNING: --lr-scaling linear gives a peak lr of 7.8e-06") and "--lr" in warning.split("7.8e-06")[1]
    assert "WARNING" not in proc.stdout


@pytest.mark.e2e
def test_torchrun_launches_two_fsdp_ranks_through_the_cli(images: Path, tmp_path: Path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [str(torchrun), "--nproc-per-node", "2", "--master-port", str(_free_port()), "-m", "aimbench", "pretrain", "aim-micro",
         "--data", str(images), "--steps", "3", "--batch-size", "8", "--out", str(tmp_path / "run"), "--workers", "0", "--device", "cpu",
         "--parallel", "fsdp"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 rank(s) (fsdp)" in proc.stdout and len(losses(tmp_path / "run")) == 3


def test_a_resume_on_other_images_is_refused_unless_allowed_and_then_recorded(images: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for path in sorted(images.rglob("*.png"))[:12]:
        (data / path.name).write_bytes(path.read_bytes())
    train(config(steps=4, save_every=2), parse_data(str(data)), tmp_path / "run", CPU, until=2)
    (data / "added.png").write_bytes(next(data.glob("*.png")).read_bytes())  # an image added between a kill and the resume
    with pytest.raises(
        UserError, match=r"--resume on other images than the run started with \(12 image\(s\) then, 13 now\); .* --allow-data-change"
    ):
        train(config(steps=4, save_every=2), parse_data(str(data)), tmp_path / "run", CPU, resume=True)
    (data / "added.png").rename(data / "renamed.png")
    (data / sorted(p.name for p in data.glob("*.png") if p.name != "renamed.png")[0]).unlink()
    with pytest.raises(UserError, match=r"\(as many images, other names\)"):
        train(config(steps=4, save_every=2), parse_data(str(data)), tmp_path / "run", CPU, resume=True)
    train(config(steps=4, save_every=2), parse_data(str(data)), tmp_path / "run", CPU, resume=True, allow_data_change=True)
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded["data_changes_at_steps"] == [2] and recorded["data_listing"][0]["images"] == 12
