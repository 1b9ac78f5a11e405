"""AIM v1: official key layout and sizes, sin-cos layout, prefix-causal mask, raw block outputs."""

from __future__ import annotations

import math

import pytest
import torch

from aimbench.models.aim import PRESETS, build_aim, prefix_causal_mask, sincos_2d

# From the paper and Apple's checkpoints (see shared/reference/aim-v1.md): width, depth, heads,
# trunk parameters.
OFFICIAL = {
    "aim-600m": (1536, 24, 12, 680_535_552),
    "aim-1b": (2048, 24, 16, 1_209_370_624),
    "aim-3b": (3072, 24, 24, 2_720_025_600),
    "aim-7b": (4096, 32, 32, 6_445_404_160),
}


def official_keys(width: int, depth: int) -> dict[str, tuple[int, ...]]:
    """The backbone keys and shapes of Apple's files, written out independently of our model."""
    keys = {
        "preprocessor.patchifier.proj.weight": (width, 3, 14, 14),
        "preprocessor.patchifier.proj.bias": (width,),
        "preprocessor.patchifier.norm.weight": (width,),
        "preprocessor.patchifier.norm.bias": (width,),
        "trunk.post_trunk_norm.weight": (width,),
        "trunk.post_trunk_norm.bias": (width,),
    }
    for i in range(depth):
        block = f"trunk.blocks.{i}"
        keys |= {
            f"{block}.attn.qkv.weight": (3 * width, width),
            f"{block}.attn.proj.weight": (width, width),
            f"{block}.mlp.fc1.weight": (4 * width, width),
            f"{block}.mlp.fc2.weight": (width, 4 * width),
        }
        for norm in ("norm_1", "norm_2"):
            keys |= {f"{block}.{norm}.weight": (width,), f"{block}.{norm}.bias": (width,)}
    return keys


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_presets_have_the_official_keys_shapes_and_sizes(name: str) -> None:
    width, depth, heads, params = OFFICIAL[name]
    model = build_aim(name, device="meta")  # no memory: the 7B costs nothing here
    state = model.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == official_keys(width, depth)
    assert len(state) + 7 == (269 if name == "aim-7b" else 205)  # + the 7 head.* keys of Apple's files
    assert sum(p.numel() for p in model.parameters()) == params
    assert PRESETS[name].heads == heads and width // heads == 128
    assert all(t.device.type == "meta" for t in state.values())


def test_build_in_a_requested_dtype() -> None:
    model = build_aim("aim-micro", dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_sincos_matches_hand_computed_values() -> None:
    dim, grid_h, grid_w = 8, 2, 3
    table = sincos_2d(grid_h, grid_w, dim)
    assert table.shape == (6, 8)
    omega = [1.0, 1.0 / 100.0]  # 1 / 10000^(i / (dim/4)), i = 0, 1

    def expected(row: int, col: int) -> list[float]:
        x = [math.sin(col * w) for w in omega] + [math.cos(col * w) for w in omega]
        y = [math.sin(row * w) for w in omega] + [math.cos(row * w) for w in omega]
        return x + y  # first half: column (x); second half: row (y)

    for index in range(6):  # raster order: index = row * grid_w + col
        row, col = divmod(index, grid_w)
        assert table[index].tolist() == pytest.approx(expected(row, col), abs=1e-6)
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(2, 2, 6)


def test_prefix_causal_mask_matches_hand_computed_values() -> None:
    mask = prefix_causal_mask(torch.tensor([2, 1]), 4)
    assert mask.shape == (2, 1, 4, 4)
    assert mask[0, 0].int().tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    assert mask[1, 0].int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]


def test_prefix_mask_controls_what_each_position_sees() -> None:
    torch.manual_seed(0)
    model = build_aim("aim-micro").eval()
    images = torch.randn(1, 3, 16, 16)  # 4x4 grid of 4 px patches -> 16 tokens
    changed = images.clone()
    changed[..., 12:, 12:] += 1.0  # the last patch (token 15) only
    prefix = torch.tensor([4])
    with torch.no_grad():
        a = model.forward_layers(images, [2], prefix)[0]
        b = model.forward_layers(changed, [2], prefix)[0]
        # causal part: no earlier token sees the last one
        assert torch.allclose(a[:, :15], b[:, :15], atol=1e-6)
        assert not torch.allclose(a[:, 15], b[:, 15])
        # prefix part: a change inside the prefix (token 3) reaches token 0, bidirectionally
        inside = images.clone()
        inside[..., 0:4, 12:16] += 1.0
        c = model.forward_layers(inside, [2], prefix)[0]
        assert not torch.allclose(a[:, 0], c[:, 0])
        # without a mask (probing) every token sees every token
        d = model.forward_layers(images, [2])[0]
        e = model.forward_layers(changed, [2])[0]
        assert not torch.allclose(d[:, 0], e[:, 0])


def test_forward_layers_are_raw_block_outputs_and_any_grid_works() -> None:
    torch.manual_seed(0)
    model = build_aim("aim-micro").eval()
    images = torch.randn(2, 3, 24, 16)  # 6x4 grid: the position embedding follows the input
    with torch.no_grad():
        outputs = model.forward_layers(images, [0, 2])
        x = model.preprocessor(images)
        manual = []
        for block in model.trunk.blocks:
            x = block(x)
            manual.append(x)
        assert [o.shape for o in outputs] == [(2, 24, 32)] * 2
        assert torch.allclose(outputs[0], manual[0]) and torch.allclose(outputs[1], manual[2])
        assert not torch.allclose(outputs[1], model.trunk.post_trunk_norm(manual[2]))
        assert torch.allclose(model(images), model.trunk.post_trunk_norm(manual[2]))
    assert not any("pos_embed" in key for key in model.state_dict())  # computed, not stored
