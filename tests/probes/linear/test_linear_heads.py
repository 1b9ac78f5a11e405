"""The linear grid's written-out training step against autograd and torch's AdamW, head by head."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from aimbench.probes.config import scaled_lr
from aimbench.probes.linear.heads import LinearHeads
from aimbench.probes.protocol import default_config
from aimbench.probes.schedule import warmup_cosine_schedule

DIM, CLASSES, SOURCES = 6, 5, 3
READS = [(0,), (1,), (2,), (0, 2)]  # three single-source columns and one concatenated pair
CONFIG = default_config(
    "linear", "aim-v1", learning_rates=(1e-2, 1e-1), weight_decays=(0.0, 1e-1), epochs=3, batch_size=16, head_precision="fp32"
)  # no clipping: the protocol's


def _data(steps: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(16, SOURCES, DIM, generator=generator), torch.randint(0, CLASSES, (16,), generator=generator)) for _ in range(steps)
    ]


def _alone(
    reads: tuple[int, ...], lr: float, wd: float, batches: list[tuple[torch.Tensor, torch.Tensor]], clip: float | None
) -> torch.Tensor:
    """One head trained by autograd and torch.optim.AdamW, as the grid's schedule drives it: its final weight."""
    layer = torch.nn.Linear(len(reads) * DIM, CLASSES)
    torch.nn.init.zeros_(layer.weight), torch.nn.init.zeros_(layer.bias)
    groups = [{"params": [layer.weight], "weight_decay": wd}, {"params": [layer.bias], "weight_decay": 0.0}]  # bias: no_weight_decay
    optimizer = torch.optim.AdamW(groups, lr=scaled_lr(lr, CONFIG))
    schedule = warmup_cosine_schedule(optimizer, CONFIG.epochs, len(batches) // CONFIG.epochs, CONFIG.warmup_fraction)
    for x, y in batches:
        optimizer.zero_grad()
        F.cross_entropy(layer(x[:, list(reads)].flatten(1)), y).backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(layer.parameters(), clip)
        optimizer.step()
        schedule.step()
    return layer.weight.detach().T  # (K*D, C), as the grid keeps it


@pytest.mark.parametrize("clip", [None, 0.05])
def test_every_head_trains_as_autograd_and_adamw_train_it_alone(clip: float | None) -> None:
    config = dataclasses.replace(CONFIG, grad_clip=clip)
    batches = _data(steps=6)
    heads = LinearHeads(config, READS, {j: [0, 1, 2, 3] for j in range(len(READS))}, (DIM, CLASSES), 6, torch.device("cpu"))
    for x, y in batches:
        heads.step(x, y)
    points = [(lr, wd) for lr in config.learning_rates for wd in config.weight_decays]
    for j, g in heads.order():
        assert torch.allclose(heads.head((j, g))[0], _alone(READS[j], *points[g], batches, clip), atol=1e-5), (j, g)


def test_bf16_products_stay_close_to_fp32() -> None:
    batches = _data(steps=6)
    trained = {}
    for precision in ("fp32", "bf16"):
        heads = LinearHeads(dataclasses.replace(CONFIG, head_precision=precision), READS, {0: [0, 1], 3: [2]}, (DIM, CLASSES), 6,
                            torch.device("cpu"))  # fmt: skip
        for x, y in batches:
            heads.step(x, y)
        trained[precision] = {head: heads.head(head)[0].clone() for head in heads.order()}
    for head, weight in trained["fp32"].items():
        difference = (trained["bf16"][head] - weight).abs().max()
        assert 0 < difference < 0.05 * weight.abs().max()  # bf16 rounding, not a different head


def test_kept_heads_continue_as_in_the_whole_grid_and_the_state_round_trips(tmp_path: Path) -> None:
    batches = _data(steps=6)
    whole = LinearHeads(CONFIG, READS, {j: [0, 1, 2, 3] for j in range(len(READS))}, (DIM, CLASSES), 6, torch.device("cpu"))
    for x, y in batches:
        whole.step(x, y)
    halved = LinearHeads(CONFIG, READS, {j: [0, 1, 2, 3] for j in range(len(READS))}, (DIM, CLASSES), 6, torch.device("cpu"))
    for x, y in batches[:2]:
        halved.step(x, y)
    kept = {(0, 1), (1, 3), (3, 0), (3, 2)}
    halved = halved.keep(kept)
    assert set(halved.order()) == kept and halved.active() == {0: [1], 1: [3], 3: [0, 2]}
    torch.save(halved.state(), tmp_path / "state.pt")
    halved = LinearHeads.from_state(
        CONFIG, READS, (DIM, CLASSES), 6, torch.device("cpu"), torch.load(tmp_path / "state.pt", weights_only=True)
    )
    for x, y in batches[2:]:
        halved.step(x, y)
    for head in kept:  # regrouped into smaller blocks, products may round differently in the last bits: no more
        for mine, theirs in zip(halved.head(head), whole.head(head)):
            assert torch.allclose(mine, theirs, rtol=0, atol=1e-6), head
