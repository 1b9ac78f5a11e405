"""aimbench's freshly built pre-training model against l3m's init, and every eps against l3m's.

``tests/fixtures/official/init.safetensors`` (made by ``tests/fixtures/make_official_fixtures.py``,
provenance in ``provenance.json``) holds, for every entry of l3m's AIM v1 state dict initialised as
l3m's runner starts a run, its shape and (mean, std, min, max); each LayerNorm's eps; and the eps
l3m's loss adds to a target patch's variance. The fixture is at the sizes of aimbench's aim-tiny
preset, so the model here is built by ``build_model``, as the trainer builds it.

Random inits differ by seed, so their statistics are compared within sampling error for the
tensor's size (:func:`allowed`); constant ones (LayerNorm affine, zero biases) and the sin-cos
tables must match exactly. l3m initialises q, k and v as three D x D projections: aimbench's fused
(3D, D) ``qkv`` is compared as those three blocks, so a Xavier init of the fused matrix (spread
1/sqrt(2) of l3m's) fails. Print the comparison with
``python -c "from tests.pretrain.test_official_init import report; report()"``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from aimbench.models.aim import PRESETS, Attention, sincos_2d
from aimbench.pretrain.head import HEAD_PRESETS
from aimbench.pretrain.objective import TARGET_EPS, AimPretrainModel, build_model, normalised_targets
from aimbench.pretrain.recipe import IMAGE_SIZES, PretrainConfig
from tests.pretrain.test_official_equality import L3M_NAMES, PROVENANCE, fixture

SIZES = PROVENANCE["fixtures"]["init"]["sizes"]
PRESET = "aim-tiny"
Z = 5  # standard errors allowed for a random init's mean and std
EXTREME_TAIL = 14  # a uniform sample's gap to its bound exceeds 14 x range / n with probability e^-14 (about 1e-6)
STATISTICS = ("mean", "std", "min", "max")


def statistics(tensor: torch.Tensor) -> torch.Tensor:
    """What the fixture records: mean, unbiased std, min, max, in float64."""
    values = tensor.detach().double().flatten()
    return torch.stack([values.mean(), values.std(), values.min(), values.max()])


def to_l3m(name: str) -> str:
    """An aimbench module or parameter name in l3m's AIM v1 MetaModel layout."""
    new, old = next((new, old) for old, new in L3M_NAMES if f"{name}.".startswith(new))
    return (old + f"{name}."[len(new) :]).removesuffix(".")


def fresh_model() -> AimPretrainModel:
    return build_model(PretrainConfig(PRESET))


def as_l3m_state(model: AimPretrainModel) -> dict[str, torch.Tensor]:
    """The model's state in l3m's names: the fused qkv split into q, k, v; the sin-cos tables l3m stores."""
    state = {}
    for name, value in model.state_dict().items():
        if name.endswith(".attn.qkv.weight"):
            stem = to_l3m(name).removesuffix("qkv.weight")
            state |= {f"{stem}{p}_proj.weight": part for p, part in zip("qkv", value.chunk(3))}
        else:
            state[to_l3m(name)] = value
    grid = (SIZES["img_size"] // SIZES["patch_size"],) * 2
    state["preprocessor.blocks.0.pos_embed"] = sincos_2d(*grid, SIZES["vision_embed_dim"])[None]
    state["head.decoder_pos_embed"] = sincos_2d(*grid, SIZES["head_embed_dim"])[None]
    return state


def allowed(official: torch.Tensor, count: int, name: str) -> torch.Tensor:
    """How far each statistic of an independent draw of the same init may fall from l3m's.

    Mean and std: Z standard errors of the difference of two samples of ``count`` values
    (sqrt(2/n) sigma for the mean; 1/sqrt(n) sigma for the std, which is the normal's and more than
    a uniform's); min and max: every random init here is uniform (Xavier-uniform, PyTorch's conv
    bias), whose extremes lie within ``EXTREME_TAIL`` x range / n of its bounds. Constant
    tensors and the fixed sin-cos tables: no difference beyond float32 rounding."""
    _, std, low, high = official.tolist()
    if std == 0 or name.endswith("pos_embed"):
        return torch.full((4,), 1e-7, dtype=torch.float64)
    extreme = EXTREME_TAIL * (high - low) / count
    return torch.tensor([Z * std * math.sqrt(2 / count), Z * std / math.sqrt(count), extreme, extreme], dtype=torch.float64)


def init_comparison(model: AimPretrainModel) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per l3m parameter: (aimbench's statistics, l3m's, allowed difference)."""
    ours, shapes, official = as_l3m_state(model), fixture("init", "shape."), fixture("init", "stats.")
    assert ours.keys() == official.keys()  # every parameter of both models, none left out
    rows = {}
    for name, stats in official.items():
        assert list(ours[name].shape) == shapes[name].tolist(), name
        rows[name] = (statistics(ours[name]), stats, allowed(stats, ours[name].numel(), name))
    return rows


def test_the_fixture_is_at_the_sizes_of_the_preset_built_here() -> None:
    trunk, head = PRESETS[PRESET], HEAD_PRESETS[PRESET]
    assert (SIZES["vision_embed_dim"], SIZES["vision_num_blocks"], SIZES["vision_num_heads"], SIZES["patch_size"]) == (
        trunk.width, trunk.depth, trunk.heads, trunk.patch_size)  # fmt: skip
    assert (SIZES["head_embed_dim"], SIZES["head_num_blocks"], SIZES["img_size"]) == (head.width, head.blocks, IMAGE_SIZES[PRESET])


def test_every_parameter_starts_as_l3m_initialises_it() -> None:
    for name, (ours, official, tolerance) in init_comparison(fresh_model()).items():
        gap = (ours - official).abs()
        assert (gap <= tolerance).all(), f"{name}: aimbench {ours.tolist()} vs l3m {official.tolist()}, allowed {tolerance.tolist()}"


def test_the_comparison_fails_on_a_fused_qkv_init() -> None:
    """The old init (Xavier-uniform on the fused (3D, D) matrix) is caught on every q, k and v."""
    model = fresh_model()
    for attention in (module for module in model.modules() if isinstance(module, Attention)):
        nn.init.xavier_uniform_(attention.qkv.weight)
    failing = {name for name, (ours, official, tolerance) in init_comparison(model).items() if ((ours - official).abs() > tolerance).any()}
    assert failing == {f"trunk.blocks.{b}.attn.{p}_proj.weight" for b in range(SIZES["vision_num_blocks"]) for p in "qkv"}


def test_every_layer_norm_has_l3ms_eps() -> None:
    official = {name: eps.item() for name, eps in fixture("init", "layer_norm_eps.").items()}
    ours = {to_l3m(name): module.eps for name, module in fresh_model().named_modules() if isinstance(module, nn.LayerNorm)}
    assert ours == official and set(official.values()) == {1e-5}


def test_the_target_variance_eps_is_l3ms() -> None:
    official = fixture("init")["target_eps"].item()
    assert TARGET_EPS == official == 1e-6
    # and the targets use it: a patch of unbiased variance v = 1e-6 comes out with variance v / (v + eps) = 1/2
    patch = torch.randn(1, 1, 48, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    patch = (patch - patch.mean()) / patch.std() * 1e-3
    assert normalised_targets(patch).var().item() == pytest.approx(1e-6 / (1e-6 + official), rel=1e-9)


def report() -> None:
    """Print aimbench's and l3m's std and the allowed gap per parameter (random inits only)."""
    for name, (ours, official, tolerance) in init_comparison(fresh_model()).items():
        if official[1] > 0 and not name.endswith("pos_embed"):
            print(f"{name:45s} std aimbench {ours[1]:.4f} l3m {official[1]:.4f} (allowed gap {tolerance[1]:.4f})")
