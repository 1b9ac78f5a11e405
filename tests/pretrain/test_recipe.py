"""The recipe: l3m's defaults, the optional lr scaling and its warning, the schedule, and which parameters are decayed.

That the defaults equal the official config's values is checked against the golden fixtures
(``test_official_equality.py``); these tests pin the behaviour by hand-computed cases.
"""

from __future__ import annotations

import math

import pytest

from aimbench.errors import UserError
from aimbench.pretrain.head import HEAD_PRESETS, HeadConfig
from aimbench.pretrain.objective import build_model
from aimbench.pretrain.recipe import PretrainConfig, build_optimizer, lr_at, param_groups


def test_defaults_follow_l3m_and_the_paper_and_the_lr_is_not_scaled_by_default() -> None:
    config = PretrainConfig("aim-600m")
    assert (config.batch_size, config.effective_lr, config.betas, config.weight_decay) == (4096, 1e-3, (0.9, 0.95), 0.05)
    assert (config.steps, config.warmup_fraction, config.warmup_start_lr, config.grad_clip) == (500_000, 0.025, 1e-6, 1.0)
    assert (config.ln_eps, config.color_jitter, config.image_size, config.head) == (1e-5, 0.8, 224, HeadConfig(2048, 12, 4))
    assert [PretrainConfig(p).steps for p in ("aim-1b", "aim-3b", "aim-7b", "aim-tiny")] == [1_200_000] * 3 + [10_000]
    assert PretrainConfig("aim-tiny", steps=10, batch_size=32).effective_lr == 1e-3  # l3m never scales its lr
    assert PretrainConfig("aim-tiny", steps=10, batch_size=1024, lr_scaling="linear").effective_lr == pytest.approx(2.5e-4)
    assert PretrainConfig("aim-tiny", steps=10, batch_size=1024, lr=0.01, lr_scaling="linear").effective_lr == 0.01  # --lr wins
    record = PretrainConfig("aim-tiny", steps=10, batch_size=64, lr_scaling="linear").to_dict()
    assert record["effective_lr"] == pytest.approx(1.5625e-5) and record["head"] == {"width": 256, "blocks": 2, "mlp_ratio": 4}
    assert (record["lr_scaling"], record["ln_eps"], record["color_jitter"], record["warmup_start_lr"]) == ("linear", 1e-5, 0.8, 1e-6)


def test_a_tiny_linearly_scaled_lr_gets_a_loud_warning_that_says_how_to_fix_it() -> None:
    warning = PretrainConfig("aim-tiny", steps=10, batch_size=32, lr_scaling="linear").lr_warning()
    assert warning is not None and warning.startswith("WARNING: ") and "\n" not in warning
    assert "peak lr of 7.8e-06" in warning and "--lr-scaling none" in warning and "--lr" in warning
    assert PretrainConfig("aim-tiny", steps=10, batch_size=32).lr_warning() is None  # unscaled: 1e-3
    assert PretrainConfig("aim-tiny", steps=10, batch_size=32, lr_scaling="linear", lr=1e-3).lr_warning() is None  # chosen
    assert PretrainConfig("aim-tiny", steps=10, batch_size=1024, lr_scaling="linear").lr_warning() is None  # 2.5e-4: a quarter


def test_bad_settings_are_user_errors() -> None:
    with pytest.raises(UserError, match="did you mean: aim-tiny"):
        PretrainConfig("aim-tin", steps=10)
    with pytest.raises(UserError, match="not a multiple of aim-tiny's patch size 4"):
        PretrainConfig("aim-tiny", steps=10, image_size=30)
    with pytest.raises(UserError, match="must be positive"):
        PretrainConfig("aim-tiny", steps=-1)
    with pytest.raises(UserError, match="--lr-scaling must be one of none, linear"):
        PretrainConfig("aim-tiny", lr_scaling="sqrt")
    with pytest.raises(UserError, match="--lr must be positive"):
        PretrainConfig("aim-tiny", lr=0.0)


def test_warmup_from_1e_minus_6_then_cosine_to_zero_as_fvcore_at_step_over_steps() -> None:
    config = PretrainConfig("aim-micro", steps=200, batch_size=8)  # warmup: where < 0.025, i.e. steps 0..4
    values = [lr_at(s, config) for s in range(200)]
    assert values[:6] == pytest.approx([1e-6 + (1e-3 - 1e-6) * s / 5 for s in range(5)] + [1e-3], rel=1e-12)
    assert values[5 + 195 // 2] == pytest.approx(0.5e-3 * (1 + math.cos(math.pi * 97 / 195)), rel=1e-12)
    assert all(a >= b for a, b in zip(values[5:], values[6:]))  # never rises after warmup
    assert 0 < values[-1] < 1e-7  # the last step is just short of the end of the cosine
    assert lr_at(0, PretrainConfig("aim-micro", steps=10, batch_size=8)) == pytest.approx(1e-6)  # step 0 trains, at 1e-6


def test_no_decay_on_l3m_wd_exclude_names_and_the_optimizer_uses_the_groups() -> None:
    config = PretrainConfig("aim-micro", steps=40, batch_size=8)
    model = build_model(config)
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = param_groups(model, 0.05)
    decayed = sorted(names[id(p)] for p in decay["params"])
    kept = sorted(names[id(p)] for p in no_decay["params"])
    assert all(n.endswith("weight") and "norm" not in n for n in decayed)
    assert "trunk.preprocessor.patchifier.proj.weight" in decayed and "head.out.weight" in decayed and "head.proj.weight" in decayed
    assert "trunk.preprocessor.patchifier.proj.bias" in kept and "trunk.trunk.post_trunk_norm.weight" in kept
    assert "head.out.bias" in kept and "head.blocks.0.norm_1.weight" in kept
    assert all("norm" in n or n.endswith("bias") for n in kept)
    assert len(decayed) + len(kept) == len(names)
    optimizer, scheduler = build_optimizer(model, config)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-6)
    assert config.head == HEAD_PRESETS["aim-micro"]
