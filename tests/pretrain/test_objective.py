"""The AIM objective on hand-computed cases: mask, patch order, target normalisation, shift and masking."""

from __future__ import annotations

import torch

from aimbench.models.aim import AIM, PRESETS, prefix_causal_mask
from aimbench.pretrain.head import HEAD_PRESETS
from aimbench.pretrain.objective import (
    AimPretrainModel,
    next_patch_loss,
    normalised_targets,
    patchify,
    sample_prefix_lengths,
    target_mask,
)


def test_prefix_causal_mask_is_bidirectional_in_the_prefix_and_causal_after() -> None:
    mask = prefix_causal_mask(torch.tensor([2, 1]), 4)
    assert mask.shape == (2, 1, 4, 4)
    assert mask[0, 0].int().tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    assert mask[1, 0].int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]  # S=1: plain causal


def test_prefix_lengths_are_uniform_on_1_to_k_minus_1_and_reproducible() -> None:
    draws = sample_prefix_lengths(20000, 5, torch.Generator().manual_seed(0))
    assert draws.min() == 1 and draws.max() == 4
    counts = torch.bincount(draws, minlength=5)[1:].float() / len(draws)
    assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.02)
    assert torch.equal(
        sample_prefix_lengths(8, 256, torch.Generator().manual_seed(3)), sample_prefix_lengths(8, 256, torch.Generator().manual_seed(3))
    )


def test_patchify_orders_values_row_column_channel() -> None:
    image = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)  # value = c*16 + y*4 + x
    patches = patchify(image, 2)
    assert patches.shape == (1, 4, 8)
    # patch 1 is the top-right one (raster order); its values: (y, x, c) for y in 0..1, x in 2..3, c in 0..1
    assert patches[0, 1].tolist() == [2, 18, 3, 19, 6, 22, 7, 23]


def test_targets_are_standardised_per_patch_with_the_unbiased_variance() -> None:
    patches = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]]])
    targets = normalised_targets(patches)
    expected = (torch.tensor([1.0, 2.0, 3.0, 4.0]) - 2.5) / (5.0 / 3.0 + 1e-6) ** 0.5
    assert torch.allclose(targets[0, 0], expected)
    assert torch.equal(targets[0, 1], torch.zeros(4))  # a flat patch: eps keeps it finite


def test_loss_shifts_by_one_and_counts_only_non_prefix_targets() -> None:
    predictions = torch.tensor([[[1.0], [2.0], [3.0], [4.0]]])  # (B=1, K=4, one value per patch)
    targets = torch.tensor([[[0.0], [10.0], [20.0], [30.0]]])
    # S=2: targets 2 and 3 count, predicted at positions 1 and 2
    assert target_mask(torch.tensor([2]), 4).tolist() == [[False, True, True]]
    loss = next_patch_loss(predictions, targets, torch.tensor([2]))
    assert loss.item() == ((2 - 20) ** 2 + (3 - 30) ** 2) / 2
    # S=1: targets 1..3 count; two samples are averaged over all their counted targets together
    both = next_patch_loss(predictions.repeat(2, 1, 1), targets.repeat(2, 1, 1), torch.tensor([1, 3]))
    assert both.item() == ((1 - 10) ** 2 + (2 - 20) ** 2 + (3 - 30) ** 2 + (3 - 30) ** 2) / 4


def test_the_trunk_under_the_mask_never_sees_a_later_patch_outside_the_prefix() -> None:
    torch.manual_seed(0)
    trunk = AIM(PRESETS["aim-micro"]).eval()
    images = torch.randn(1, 3, 16, 16)
    changed = images.clone()
    changed[..., 12:, 12:] += 5.0  # the last patch (index 15)
    prefix = torch.tensor([6])
    with torch.no_grad():
        before, after = trunk(images, prefix), trunk(changed, prefix)
    assert torch.allclose(before[:, :15], after[:, :15], atol=1e-6)  # positions 0..14 cannot see patch 15
    assert not torch.allclose(before[:, 15], after[:, 15])
    with torch.no_grad():  # without a mask (probing) every position sees it
        assert not torch.allclose(trunk(images)[:, 0], trunk(changed)[:, 0])


def test_the_model_loss_is_finite_and_reaches_trunk_and_head() -> None:
    torch.manual_seed(0)
    model = AimPretrainModel(AIM(PRESETS["aim-micro"]), HEAD_PRESETS["aim-micro"])
    loss = model(torch.randn(2, 3, 16, 16), torch.tensor([3, 9]))
    assert torch.isfinite(loss) and loss.item() > 0.1
    loss.backward()
    assert model.trunk.trunk.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.head.out.weight.grad.abs().sum() > 0
    assert model.head.out.weight.shape == (48, 64)  # 4 x 4 x 3 pixel values from the head width
