"""Checkpoints round-trip every state; the exported trunk is Apple's key layout, loadable strictly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from aimbench.adapters.weights import load_state_dict_file
from aimbench.errors import UserError
from aimbench.models.aim import AIM, PRESETS
from aimbench.pretrain.checkpoint import export_trunk, load_checkpoint, restore, save_checkpoint
from aimbench.pretrain.objective import build_model
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
    save_checkpoint(tmp_path / "c.pt", model, optimizer, scheduler, 1, config.to_dict())
    expected_draw = torch.rand(3)
    fresh = build_model(PretrainConfig("aim-micro", steps=10, batch_size=2, seed=7))
    fresh_opt, fresh_sched = build_optimizer(fresh, config)
    state = load_checkpoint(tmp_path / "c.pt")
    assert restore(state, fresh, fresh_opt, fresh_sched) == 1
    assert torch.equal(torch.rand(3), expected_draw)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    assert fresh_sched.last_epoch == 1 and fresh_opt.state_dict()["state"][0]["step"] == 1
    assert state["config"]["preset"] == "aim-micro"


def test_a_corrupt_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "c.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot be read"):
        load_checkpoint(tmp_path / "c.pt")


def test_the_exported_trunk_has_apples_keys_and_loads_strictly(tmp_path: Path) -> None:
    model, _, _ = trained_one_step(PretrainConfig("aim-micro", steps=10, batch_size=2))
    export_trunk(model.trunk, tmp_path / "trunk.safetensors", {"preset": "aim-micro"})
    state = load_state_dict_file(tmp_path / "trunk.safetensors")
    assert sorted(state) == sorted(AIM(PRESETS["aim-micro"]).state_dict())
    assert "trunk.blocks.0.attn.qkv.weight" in state and "preprocessor.patchifier.proj.weight" in state
    assert not any(key.startswith("head") for key in state)
    reloaded = AIM(PRESETS["aim-micro"])
    reloaded.load_state_dict(state, strict=True)
    assert torch.equal(reloaded.trunk.blocks[2].mlp.fc2.weight, model.trunk.trunk.blocks[2].mlp.fc2.weight)
    with safe_open(str(tmp_path / "trunk.safetensors"), "pt") as handle:
        assert handle.metadata() == {"preset": "aim-micro"}
