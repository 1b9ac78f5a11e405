"""Checkpoints round-trip every state; the exported trunk is Apple's key layout, loadable strictly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from aimbench.adapters.weights import load_state_dict_file
from aimbench.checksum import CHECKSUM_KEY, content_sha256
from aimbench.errors import UserError
from aimbench.models.aim import AIM, PRESETS
from aimbench.pretrain.checkpoint import export_trunk, load_checkpoint, save_checkpoint
from aimbench.pretrain.objective import build_model
from aimbench.pretrain.parallel import Parallelism, full_state, load_full_state
from aimbench.pretrain.recipe import PretrainConfig, build_optimizer


def trained_one_step(config: PretrainConfig):
    model = build_model(config)
    optimizer, scheduler = build_optimizer(model, config)
    model(torch.randn(2, 3, 16, 16), torch.tensor([2, 5])).backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


def test_a_checkpoint_restores_model_optimizer_scheduler_rng_and_step(tmp_path: Path) -> None:
    config = PretrainConfig("aim-micro", steps=10, batch_size=2)
    model, optimizer, scheduler = trained_one_step(config)
    torch.manual_seed(123)
    save_checkpoint(tmp_path / "c.pt", *full_state(model, optimizer), scheduler, 1, config.to_dict())
    expected_draw = torch.rand(3)
    fresh = build_model(PretrainConfig("aim-micro", steps=10, batch_size=2, seed=7))
    fresh_opt, fresh_sched = build_optimizer(fresh, config)
    state = load_checkpoint(tmp_path / "c.pt")
    load_full_state(fresh, fresh_opt, state, Parallelism("single", activation_checkpointing=False))
    fresh_sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    assert state["step"] == 1 and torch.equal(torch.rand(3), expected_draw)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    assert fresh_sched.last_epoch == 1 and fresh_opt.state_dict()["state"][0]["step"] == 1
    for a, b in zip(optimizer.state_dict()["state"].values(), fresh_opt.state_dict()["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    assert fresh_opt.param_groups[1]["weight_decay"] == 0.0 and fresh_opt.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    assert state["config"]["preset"] == "aim-micro"


def test_a_corrupt_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "c.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot be read"):
        load_checkpoint(tmp_path / "c.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")  # loads fine, but holds no checkpoint
    with pytest.raises(UserError, match="is not an aimbench pre-training checkpoint"):
        load_checkpoint(tmp_path / "tensor.pt")


def test_one_flipped_bit_in_a_weight_stops_the_resume_with_the_file_named(tmp_path: Path) -> None:
    config = PretrainConfig("aim-micro", steps=10, batch_size=2)
    model, optimizer, scheduler = trained_one_step(config)
    model_state, optimizer_state = full_state(model, optimizer)
    path = tmp_path / "c.pt"
    save_checkpoint(path, model_state, optimizer_state, scheduler, 1, config.to_dict())
    assert load_checkpoint(path)["step"] == 1
    data = bytearray(path.read_bytes())
    weight = next(t for t in model_state.values() if t.numel() >= 64).float().numpy().tobytes()
    at = data.find(weight)  # torch.save stores tensors uncompressed: find this weight's bytes in the file
    assert at > 0
    data[at + 3] ^= 0x40  # one exponent bit of the first value: it parses, and the value becomes huge or tiny
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=f"checkpoint {path} failed its checksum"):
        load_checkpoint(path)


def test_the_exported_trunk_has_apples_keys_and_loads_strictly(tmp_path: Path) -> None:
    model, _, _ = trained_one_step(PretrainConfig("aim-micro", steps=10, batch_size=2))
    export_trunk(model.state_dict(), tmp_path / "trunk.safetensors", {"preset": "aim-micro"})
    state = load_state_dict_file(tmp_path / "trunk.safetensors")
    assert sorted(state) == sorted(AIM(PRESETS["aim-micro"]).state_dict())
    assert "trunk.blocks.0.attn.qkv.weight" in state and "preprocessor.patchifier.proj.weight" in state
    assert not any(key.startswith("head") for key in state)
    reloaded = AIM(PRESETS["aim-micro"])
    reloaded.load_state_dict(state, strict=True)
    assert torch.equal(reloaded.trunk.blocks[2].mlp.fc2.weight, model.trunk.trunk.blocks[2].mlp.fc2.weight)
    with safe_open(str(tmp_path / "trunk.safetensors"), "pt") as handle:
        metadata = handle.metadata()
    assert metadata == {"preset": "aim-micro", CHECKSUM_KEY: content_sha256(state)}


def test_an_exported_trunk_damaged_after_export_is_refused(tmp_path: Path) -> None:
    model, _, _ = trained_one_step(PretrainConfig("aim-micro", steps=10, batch_size=2))
    path = tmp_path / "trunk.safetensors"
    export_trunk(model.state_dict(), path, {"preset": "aim-micro"})
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40  # inside the last tensor's values: the file still parses
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="failed its checksum"):
        load_state_dict_file(path)
