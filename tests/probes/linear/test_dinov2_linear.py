"""DINOv2's linear recipe: the card against the values read from DINOv2's code, and the heads that
train it (SGD with momentum, N(0, 0.01^2) init, raw features, its token kinds, a fixed number of steps)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from aimbench.cards.backbone_card import CLS, CONCAT, PATCH_MEAN, column_kinds
from aimbench.probes.config import scaled_lr
from aimbench.probes.features.extract import PooledFeatures, ProbeSource, head_inputs
from aimbench.probes.features.layer_sets import LayerSet
from aimbench.probes.linear.config import LinearProbeConfig
from aimbench.probes.linear.heads import LinearHeads
from aimbench.probes.linear.training import train_linear_probes
from aimbench.probes.protocol import builtin_protocol, default_config
from aimbench.probes.schedule import head_seed, warmup_cosine_schedule

FIXTURE = Path(__file__).parents[2] / "fixtures" / "official" / "dinov2_linear.json"
DINOV2 = default_config("linear", "dinov2-linear")
assert isinstance(DINOV2, LinearProbeConfig)


def test_the_card_holds_the_values_dinov2s_code_sets() -> None:
    official = json.loads(FIXTURE.read_text())
    values, commit = official["values"], official["provenance"]["commit"]
    assert list(DINOV2.learning_rates) == values["learning_rates"]
    assert list(DINOV2.weight_decays) == [values["weight_decay"]]
    assert (DINOV2.epochs, DINOV2.epoch_length) == (values["epochs"], values["epoch_length"])
    assert DINOV2.batch_size == values["batch_size_per_gpu"] * values["ngpus_per_node"] * values["nodes"]
    assert values["lr_scaling"].endswith(f"/ {DINOV2.base_batch_size:.1f}")  # lr x global batch / 256
    assert (DINOV2.optimizer, DINOV2.momentum) == ("sgd", values["momentum"]) and values["optimizer"] == "torch.optim.SGD"
    assert values["scheduler"].endswith("CosineAnnealingLR") and values["eta_min"] == 0 and DINOV2.warmup_fraction == 0
    assert DINOV2.init_std == values["init_weight_std"] and DINOV2.grad_clip is None
    assert DINOV2.block_norm == ("final" if values["intermediate_layers_norm"] else "raw") and DINOV2.feature_norm == "none"
    assert set(DINOV2.token_kinds) == {CONCAT if avgpool else CLS for avgpool in values["avgpool"]}
    transform = values["train_transform"]
    assert (DINOV2.data_mode, DINOV2.augmentation, transform["hflip_prob"]) == ("online", "rrc_flip", "0.5")
    # every field's source names the commit the fixture was read at, unless it is aimbench's own
    sources = {name: field.source for name, field in builtin_protocol("dinov2-linear").sections["linear"].items()}
    assert all(f"({commit[:7]})" in source for source in sources.values()), sources


def test_a_head_trains_as_torch_sgd_trains_it_alone_from_its_own_init() -> None:
    """Momentum SGD without decay, a cosine without warmup, weights N(0, 0.01^2) from the head's own
    seed, biases zero: each head of the grid ends where torch's SGD takes the same head alone."""
    config = dataclasses.replace(DINOV2, learning_rates=(1e-2, 1e-1), batch_size=16, epochs=2, epoch_length=3)
    dim, classes, reads = 6, 5, [(0,), (1,), (0, 1)]
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 2, dim, generator=generator), torch.randint(0, classes, (16,), generator=generator)) for _ in range(6)]
    seeds = [head_seed(0, f"set/{j}", lr, 0.0) for j in range(len(reads)) for lr in config.learning_rates]
    heads = LinearHeads(config, reads, {j: [0, 1] for j in range(len(reads))}, (dim, classes), 6, torch.device("cpu"), seeds)
    for x, y in batches:
        heads.step(x, y)
    for j, g in heads.order():
        layer = torch.nn.Linear(len(reads[j]) * dim, classes)
        with torch.no_grad():
            layer.weight.copy_(
                torch.randn(len(reads[j]) * dim, classes, generator=torch.Generator().manual_seed(seeds[j * 2 + g])).T * 0.01
            )
            layer.bias.zero_()
        optimizer = torch.optim.SGD(layer.parameters(), lr=scaled_lr(config.learning_rates[g], config), momentum=0.9)
        schedule = warmup_cosine_schedule(optimizer, 1, 6, 0.0)
        for x, y in batches:
            optimizer.zero_grad()
            F.cross_entropy(layer(x[:, list(reads[j])].flatten(1)), y).backward()
            optimizer.step()
            schedule.step()
        weight, bias = heads.head((j, g))
        assert torch.allclose(weight, layer.weight.detach().T, atol=1e-6) and torch.allclose(bias, layer.bias.detach(), atol=1e-6)


def _splits(scale: float = 1.0) -> tuple[PooledFeatures, ...]:
    generator = torch.Generator().manual_seed(3)
    centres = torch.randn(2, 3, 4, generator=generator)
    out = []
    for n in (96, 48, 48):
        labels = torch.randint(0, 3, (n,), generator=generator)
        out.append(PooledFeatures(scale * (torch.randn(n, 2, 4, generator=generator) + centres[:, labels].transpose(0, 1)), labels))
    return tuple(out)


SOURCES = [ProbeSource(LayerSet("0", (0,)), PATCH_MEAN), ProbeSource(LayerSet("0", (0,)), CLS)]
SMALL = dataclasses.replace(DINOV2, learning_rates=(1e-2, 1e-1), batch_size=32, epochs=2, epoch_length=5)


def test_the_recipe_trains_a_fixed_number_of_steps_on_its_token_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    steps: list[int] = []
    step = LinearHeads.step
    monkeypatch.setattr(LinearHeads, "step", lambda self, x, y: (steps.append(len(y)), step(self, x, y)))
    result = train_linear_probes(*_splits(), SOURCES, 3, SMALL, seed=0)
    assert len(steps) == SMALL.epochs * SMALL.epoch_length == 10  # 96 images at batch 32: 3 passes and a third, not 2 passes
    assert {head.token for head in result.heads} == {CLS, CONCAT}  # DINOv2's two: no patch mean alone
    assert column_kinds([PATCH_MEAN], SMALL.token_kinds) == [PATCH_MEAN]  # a backbone without cls (AIM): its patch mean
    assert [kind for _, kind, _ in head_inputs(SOURCES)] == [PATCH_MEAN, CLS, CONCAT]  # aim-v1's: every kind


def test_raw_features_are_read_as_they_are_and_standardised_ones_are_scale_free() -> None:
    raw, normed = SMALL, dataclasses.replace(SMALL, feature_norm="batchnorm", init_std=0.0)
    assert train_linear_probes(*_splits(), SOURCES, 3, normed, seed=0) == train_linear_probes(*_splits(1000.0), SOURCES, 3, normed, seed=0)
    assert train_linear_probes(*_splits(), SOURCES, 3, raw, seed=0) != train_linear_probes(*_splits(1000.0), SOURCES, 3, raw, seed=0)


def test_an_sgd_run_resumes_to_the_same_result(tmp_path: Path) -> None:
    from aimbench.probes.checkpoint import Checkpointing

    whole = train_linear_probes(*_splits(), SOURCES, 3, SMALL, seed=1)
    state = tmp_path / "linear.pt"

    class Killed(Checkpointing):
        def after_step(self, done: int, total: int, state: object) -> None:
            if done == 7:
                self.save(state())  # type: ignore[operator]
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_linear_probes(*_splits(), SOURCES, 3, SMALL, seed=1, checkpoint=Killed(state, "cell"))
    saved = Checkpointing(state, "cell").load()
    assert saved is not None and (saved["epoch"], saved["step"]) == (2, 1)  # killed in the third pass over the train split
    assert train_linear_probes(*_splits(), SOURCES, 3, SMALL, seed=1, checkpoint=Checkpointing(state, "cell")) == whole


def test_the_schedule_reaches_zero_at_the_recipes_last_step(monkeypatch: pytest.MonkeyPatch) -> None:
    lrs: list[float] = []
    step = LinearHeads.step

    def recording(self: LinearHeads, x: torch.Tensor, y: torch.Tensor) -> None:
        lrs.append(self.optimizer.param_groups[0]["lr"])
        step(self, x, y)

    monkeypatch.setattr(LinearHeads, "step", recording)
    train_linear_probes(*_splits(), SOURCES, 3, SMALL, seed=0)
    peak = scaled_lr(SMALL.learning_rates[0], SMALL)
    assert len(lrs) == 10 and lrs[0] == pytest.approx(peak)  # no warmup: the first step at the peak
    assert lrs[-1] == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * 9 / 10)))  # the cosine over all 10 steps, 3 passes and a third
