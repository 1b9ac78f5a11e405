"""The recipe: learning-rate scaling, the schedule, and which parameters are decayed."""

from __future__ import annotations

import math

import pytest

from aimbench.errors import UserError
from aimbench.pretrain.head import HEAD_PRESETS, HeadConfig
from aimbench.pretrain.objective import build_model
from aimbench.pretrain.recipe import PretrainConfig, build_optimizer, lr_multiplier, param_groups


def test_defaults_follow_the_paper_and_scale_the_lr_with_the_batch() -> None:
    config = PretrainConfig("aim-600m", steps=1000)
    assert (config.batch_size, config.effective_lr, config.betas, config.weight_decay) == (4096, 1e-3, (0.9, 0.95), 0.05)
    assert (config.warmup_steps, config.grad_clip, config.image_size, config.head) == (25, 1.0, 224, HeadConfig(2048, 12, 4))
    assert PretrainConfig("aim-tiny", steps=10, batch_size=1024).effective_lr == pytest.approx(2.5e-4)
    assert PretrainConfig("aim-tiny", steps=10, batch_size=1024, lr=0.01).effective_lr == 0.01  # an explicit lr wins
    record = PretrainConfig("aim-tiny", steps=10, batch_size=64).to_dict()
    assert record["effective_lr"] == pytest.approx(1.5625e-5) and record["head"] == {"width": 256, "blocks": 2, "mlp_ratio": 4}


def test_bad_settings_are_user_errors() -> None:
    with pytest.raises(UserError, match="did you mean: aim-tiny"):
        PretrainConfig("aim-tin", steps=10)
    with pytest.raises(UserError, match="not a multiple of aim-tiny's patch size 4"):
        PretrainConfig("aim-tiny", steps=10, image_size=30)
    with pytest.raises(UserError, match="must be positive"):
        PretrainConfig("aim-tiny", steps=0)


def test_warmup_then_cosine_to_zero() -> None:
    steps, warmup = 200, 5
    values = [lr_multiplier(s, steps, warmup) for s in range(steps + 1)]
    assert values[:6] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    assert values[5 + (steps - 5) // 2] == pytest.approx(0.5 * (1 + math.cos(math.pi * 97 / 195)))
    assert all(a >= b for a, b in zip(values[5:], values[6:]))  # never rises after warmup
    assert values[steps] == pytest.approx(0.0, abs=1e-12)


def test_no_decay_on_biases_norms_and_the_optimizer_uses_the_groups() -> None:
    config = PretrainConfig("aim-micro", steps=40, batch_size=8)
    model = build_model(config)
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = param_groups(model, 0.05)
    decayed = sorted(names[id(p)] for p in decay["params"])
    kept = sorted(names[id(p)] for p in no_decay["params"])
    assert all(n.endswith("weight") and "norm" not in n for n in decayed)
    assert "trunk.preprocessor.patchifier.proj.weight" in decayed and "head.out.weight" in decayed
    assert "trunk.preprocessor.patchifier.proj.bias" in kept and "trunk.trunk.post_trunk_norm.weight" in kept
    assert all("norm" in n or n.endswith("bias") for n in kept)
    assert len(decayed) + len(kept) == len(names)
    optimizer, scheduler = build_optimizer(model, config)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(config.effective_lr * lr_multiplier(0, 40, config.warmup_steps))
    assert config.head == HEAD_PRESETS["aim-micro"]
