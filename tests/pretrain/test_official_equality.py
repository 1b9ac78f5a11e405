"""aimbench against golden fixtures from Apple's official code (apple/ml-l3m ``configs/aimv1``, apple/ml-aim).

``tests/fixtures/make_official_fixtures.py`` built the official modules at tiny size, ran them and
wrote their weights, inputs and outputs under ``tests/fixtures/official/`` (provenance.json says
which repository, commit and file each came from). Here aimbench's counterparts get the same
weights (names mapped below where l3m's differ) and inputs, and must give the same outputs to 1e-5
(max absolute difference; the gradients of the whole model to 1e-6, learning rates to 1e-12); random
choices are compared as distributions, within 5 standard errors. The init and every eps:
``test_official_init.py``.
The ``*_pairs`` functions return (aimbench, official) per quantity, so the measured differences can
also be printed: ``python -c "from tests.pretrain.test_official_equality import report; report()"``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from aimbench.models.aim import AIM, AimConfig, prefix_causal_mask, sincos_2d
from aimbench.pretrain.augment import (
    BRIGHTNESS,
    COLOR_JITTER_P,
    CONTRAST,
    CROP_SCALE,
    HUE,
    SATURATION,
    AugmentParams,
    Jitter,
    draw_params,
    train_transform,
)
from aimbench.pretrain.data import AUGMENT
from aimbench.pretrain.head import HeadConfig, PixelHead
from aimbench.pretrain.keyed_order import mix
from aimbench.pretrain.objective import AimPretrainModel, next_patch_loss, normalised_targets, patchify, sample_prefix_lengths, target_mask
from aimbench.pretrain.recipe import WD_EXCLUDE, PretrainConfig, build_optimizer, lr_at
from aimbench.probes.attentive.grid import AttentiveGrid
from aimbench.probes.attentive.head import head_from_state_dict

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "official"
PROVENANCE = json.loads((FIXTURES / "provenance.json").read_text())
TINY = PROVENANCE["tiny"]
GRID = (TINY["img_size"] // TINY["patch_size"],) * 2
Pairs = dict[str, tuple[torch.Tensor, torch.Tensor]]
# l3m's AIM v1 MetaModel names -> AimPretrainModel's (the trunk's are Apple's released layout)
L3M_NAMES = (("preprocessor.blocks.0.", "trunk.preprocessor."), ("trunk.", "trunk.trunk."), ("head.decoder_projection.", "head.proj."),
             ("head.decoder_blocks.", "head.blocks."), ("head.decoder_norm.", "head.norm."), ("head.decoder_pred.", "head.out."))  # fmt: skip


def fixture(name: str, prefix: str = "") -> dict[str, torch.Tensor]:
    tensors = load_file(str(FIXTURES / f"{name}.safetensors"))
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def from_l3m(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """l3m's state dict in aimbench's names; its separate q/k/v projections stacked into the fused qkv
    (in that order, as Apple's released checkpoints hold them); its fixed sin-cos tables left out
    (aimbench computes them, compared in :func:`head_pairs` and :func:`pretrain_pairs`)."""
    mapped = {}
    for key, value in state.items():
        if key.endswith("pos_embed"):
            continue
        old, new = next((old, new) for old, new in L3M_NAMES if key.startswith(old))
        mapped[new + key[len(old) :]] = value
    for key in [k for k in mapped if k.endswith(".attn.q_proj.weight")]:
        stem = key.removesuffix("q_proj.weight")
        mapped[stem + "qkv.weight"] = torch.cat([mapped.pop(stem + f"{p}_proj.weight") for p in "qkv"])
    return mapped


def prefix_lengths(mask: torch.Tensor) -> torch.Tensor:
    """l3m's encoder_prefix_mask (True = not in the prefix) as aimbench's per-sample prefix lengths."""
    return mask.shape[1] - mask.sum(dim=1)


def pretrain_model() -> AimPretrainModel:
    width, depth, heads, patch = (TINY[k] for k in ("vision_embed_dim", "vision_num_blocks", "vision_num_heads", "patch_size"))
    trunk = AIM(AimConfig(width, depth, heads, patch, ln_eps=PretrainConfig.ln_eps))  # the recipe's default eps
    model = AimPretrainModel(trunk, HeadConfig(TINY["head_embed_dim"], TINY["head_num_blocks"]))
    model.load_state_dict(from_l3m(fixture("pretrain", "state.")), strict=True)
    return model.eval()


def pretrain_pairs() -> Pairs:
    """l3m's whole AIM v1 model: every block under the prefix mask, the trunk's output, the head's pixels, the loss."""
    official, state, model = fixture("pretrain", "out."), fixture("pretrain", "state."), pretrain_model()
    images, prefix = fixture("pretrain", "in.")["images"], prefix_lengths(fixture("pretrain", "in.")["mask"])
    with torch.no_grad():
        blocks = model.trunk.forward_layers(images, list(range(TINY["vision_num_blocks"])), prefix)
        tokens = model.trunk(images, prefix)
        pairs = {f"trunk block {i}": (block, official[f"block{i}"]) for i, block in enumerate(blocks)}
        pairs |= {
            "trunk output (post-trunk norm)": (tokens, official["trunk"]),
            "head pixels": (model.head(tokens, GRID), official["preds"]),
        }
        pairs["loss"] = (model(images, prefix), official["loss"])
    pairs["trunk sin-cos table"] = (sincos_2d(*GRID, TINY["vision_embed_dim"]), state["preprocessor.blocks.0.pos_embed"][0])
    return pairs


def backward_pairs() -> Pairs:
    """The gradient of the pretrain fixture's loss for every parameter (trunk under the dense prefix-causal
    mask, head, loss), against l3m's through its dense mask builder; q, k, v gradients stacked as qkv's."""
    model, given = pretrain_model(), fixture("pretrain", "in.")
    loss = model(given["images"], prefix_lengths(given["mask"]))
    loss.backward()
    official = from_l3m(fixture("backward", "grad."))
    assert official.keys() == {name for name, _ in model.named_parameters()}
    pairs = {f"gradient of {name}": (parameter.grad, official[name]) for name, parameter in model.named_parameters()}
    return pairs | {"loss": (loss.detach(), fixture("backward", "out.")["loss"])}


def head_pairs() -> Pairs:
    state = fixture("head", "state.")
    head = PixelHead(
        TINY["vision_embed_dim"], 48, HeadConfig(TINY["head_embed_dim"], TINY["head_num_blocks"]), PretrainConfig.ln_eps
    ).eval()
    head.load_state_dict({k.removeprefix("head."): v for k, v in from_l3m({f"head.{k}": v for k, v in state.items()}).items()}, strict=True)
    with torch.no_grad():
        preds = head(fixture("head", "in.")["tokens"], GRID)
    return {"head pixels": (preds, fixture("head", "out.")["preds"]),
            "head sin-cos table": (sincos_2d(*GRID, TINY["head_embed_dim"]), state["decoder_pos_embed"][0])}  # fmt: skip


def loss_pairs() -> Pairs:
    given = fixture("loss", "in.")
    targets = normalised_targets(patchify(given["images"], TINY["patch_size"]))
    return {"loss": (next_patch_loss(given["preds"], targets, prefix_lengths(given["mask"])), fixture("loss", "out.")["loss"])}


def mask_pairs() -> Pairs:
    official = fixture("mask", "out.")
    prefix = prefix_lengths(fixture("mask", "in.")["mask"])
    ours = prefix_causal_mask(prefix, GRID[0] * GRID[1])[:, 0]
    return {"attention mask vs FlexAttention mask_mod": (ours.int(), official["flex_attention_mask"].int()),
            "attention mask vs dense mask builder": (ours.int(), official["dense_attention_mask"].int()),
            "loss positions": (target_mask(prefix, GRID[0] * GRID[1]).int(), official["loss_mask"].int())}  # fmt: skip


def augment_transform() -> Callable[[Image.Image, AugmentParams], torch.Tensor]:
    recipe = PROVENANCE["recipe"]
    return train_transform(TINY["img_size"], recipe["mean"], recipe["std"]).apply


def official_params(index: int) -> AugmentParams:
    out = fixture("augment", "out.")
    jitter = Jitter(tuple(out["order"][index].tolist()), *out["factors"][index].tolist()) if out["applied"][index] else None
    return AugmentParams(tuple(out["crop"][index].tolist()), bool(out["flip"][index]), jitter)


def augment_pairs() -> Pairs:
    """The official views replayed with the parameters torchvision drew for them (crop, flip, jitter order and factors)."""
    image, apply = Image.fromarray(fixture("augment", "in.")["image"].numpy()), augment_transform()
    views = fixture("augment", "out.")["views"]
    described = {i: f"view {i} (flip {official_params(i).flip}, jitter {official_params(i).jitter is not None})" for i in range(len(views))}
    return {described[i]: (apply(image, official_params(i)), views[i]) for i in range(len(views))}


def schedule_pairs() -> Pairs:
    pairs = {}
    for key, official in fixture("schedule", "out.").items():
        config = PretrainConfig("aim-micro", steps=int(key.removeprefix("lr_")))
        pairs[f"lr over {config.steps} steps"] = (
            torch.tensor([lr_at(s, config) for s in range(config.steps)], dtype=torch.float64),
            official,
        )
    return pairs


def aim_v1_pairs() -> Pairs:
    """ml-aim's released model code: Apple's keys load strictly, no renaming; block outputs, probe tokens, attentive logits."""
    state, official, images = fixture("aim_v1", "state."), fixture("aim_v1", "out."), fixture("aim_v1", "in.")["images"]
    trunk = AIM(AimConfig(width=16, depth=3, heads=2, patch_size=4)).eval()  # the released models' eps, 1e-6
    trunk.load_state_dict({k: v for k, v in state.items() if not k.startswith("head.")}, strict=True)
    head = head_from_state_dict({k: v for k, v in state.items() if k.startswith("head.")}, heads=2, source="aim_v1 fixture")
    grid = AttentiveGrid([0], 16, 5, 2)  # the probe engine's batched heads, given the same head's weights
    with torch.no_grad():
        for name, value in (("cls_token", head.cls_token.reshape(1, 16)), ("k", head.k.weight[None]), ("v", head.v.weight[None]),
                            ("weight", head.linear.weight[None]), ("bias", torch.zeros(1, 5))):  # fmt: skip
            getattr(grid, name).copy_(value)
        blocks = trunk.forward_layers(images, [0, 1, 2])
        probe_tokens = torch.stack(blocks[1:]).mean(dim=0)  # the layers the fixture's head reads
        normed = head.bn(probe_tokens.transpose(1, 2)).transpose(1, 2)
        pairs = {f"released trunk block {i}": (block, official[f"block{i}"]) for i, block in enumerate(blocks)}
        pairs |= {"probe tokens (mean of blocks 1, 2)": (probe_tokens, official["probe_tokens"]),
                  "attentive probe logits": (head(probe_tokens), official["logits"]),
                  "attentive probe logits (AttentiveGrid)": (grid(normed[None])[0], official["logits"])}  # fmt: skip
    return pairs


ALL_PAIRS = {"pretrain": pretrain_pairs, "backward": backward_pairs, "head": head_pairs, "loss": loss_pairs, "mask": mask_pairs,
             "augment": augment_pairs, "schedule": schedule_pairs, "aim_v1": aim_v1_pairs}  # fmt: skip
# learning rates are ~1e-3: compared far tighter; gradients (~1e-2 and below) tighter than activations
ATOL = {"schedule": 1e-12, "backward": 1e-6}


@pytest.mark.parametrize("name", list(ALL_PAIRS))
def test_aimbench_computes_what_the_official_code_computes(name: str) -> None:
    atol = ATOL.get(name, 1e-5)
    for what, (ours, official) in ALL_PAIRS[name]().items():
        assert ours.shape == official.shape, what
        torch.testing.assert_close(ours, official.to(ours.dtype), atol=atol, rtol=0, msg=lambda m, w=what: f"{name}, {w}: {m}")


def z_score(ours: np.ndarray, official: np.ndarray) -> float:
    """How many standard errors apart the two sample means are."""
    error = math.sqrt(ours.var(ddof=1) / len(ours) + official.var(ddof=1) / len(official))
    return abs(ours.mean() - official.mean()) / error if error else float(ours.mean() != official.mean()) * math.inf


def augment_statistics(params: list[AugmentParams], channel_means: np.ndarray, height: int, width: int) -> dict[str, np.ndarray]:
    """Per-view observables whose means must agree: coins, crop shape, jitter factors and order, output colour."""
    applied = [p.jitter for p in params if p.jitter is not None]
    stats = {"jitter applied": np.array([p.jitter is not None for p in params], float), "flip": np.array([p.flip for p in params], float),
             "crop area": np.array([p.crop[2] * p.crop[3] / (height * width) for p in params]),
             "crop log aspect": np.array([math.log(p.crop[3] / p.crop[2]) for p in params])}  # fmt: skip
    operations = ("brightness", "contrast", "saturation", "hue")
    for name in operations:
        values = np.array([getattr(j, name) for j in applied])
        stats[name], stats[f"{name} squared deviation"] = values, (values - values.mean()) ** 2
    stats |= {f"{op} first": np.array([j.order[0] == i for j in applied], float) for i, op in enumerate(operations)}
    return stats | {f"output channel {c} mean": channel_means[:, c] for c in range(3)}


def augment_z_scores() -> dict[str, float]:
    """aimbench's draws (from the per-slot generators PretrainBatches uses) against torchvision's under the global seed."""
    image = Image.fromarray(fixture("augment", "in.")["image"].numpy())
    out, apply = fixture("augment", "out."), augment_transform()
    drawn = [official_params(i) for i in range(len(out["flip"]))]
    official = augment_statistics(drawn, out["view_channel_means"].double().numpy(), image.height, image.width)
    params = [draw_params(image.height, image.width, torch.Generator().manual_seed(mix(0, AUGMENT, slot))) for slot in range(2000)]
    means = np.stack([apply(image, p).mean(dim=(1, 2)).double().numpy() for p in params])
    ours = augment_statistics(params, means, image.height, image.width)
    return {name: z_score(ours[name], official[name]) for name in official}


def test_augmentation_draws_follow_the_official_distributions_within_5_standard_errors() -> None:
    scores = augment_z_scores()
    assert len(scores) == 19 and all(score <= 5 for score in scores.values()), scores


def prefix_length_z_scores() -> dict[str, float]:
    counts = fixture("mask", "out.")["prefix_length_counts_256"]
    official = np.repeat(np.arange(len(counts)), counts.numpy()).astype(float)
    ours = sample_prefix_lengths(20000, 256, torch.Generator().manual_seed(0)).double().numpy()
    assert (ours.min(), ours.max()) == (official.min(), official.max()) == (1, 255)
    spread = z_score((ours - ours.mean()) ** 2, (official - official.mean()) ** 2)
    return {"prefix length": z_score(ours, official), "prefix length squared deviation": spread}


def test_prefix_lengths_follow_the_official_distribution_at_256_patches() -> None:
    scores = prefix_length_z_scores()
    assert all(score <= 5 for score in scores.values()), scores


def test_the_recipe_defaults_are_the_official_config_values() -> None:
    recipe, config = PROVENANCE["recipe"], PretrainConfig("aim-600m")
    optimizer, _ = build_optimizer(torch.nn.Linear(2, 2), config)
    assert (config.effective_lr, list(config.betas), optimizer.defaults["eps"]) == (recipe["lr"], recipe["betas"], recipe["adam_eps"])
    assert (config.weight_decay, list(WD_EXCLUDE), config.grad_clip) == (recipe["weight_decay"], recipe["wd_exclude"], recipe["grad_clip"])
    assert (config.warmup_start_lr, config.warmup_fraction) == (recipe["warmup_start_lr"], recipe["lengths"][0] / sum(recipe["lengths"]))
    assert lr_at(config.steps, config) == pytest.approx(recipe["final_lr"], abs=1e-18)
    assert set(recipe["ln_eps"].values()) == {config.ln_eps} and config.head == HeadConfig(**recipe["head"])
    assert (list(CROP_SCALE), list(config.mean), list(config.std)) == (recipe["crop_scale"], recipe["mean"], recipe["std"])
    jitter = recipe["color_jitter"]
    assert (config.color_jitter, COLOR_JITTER_P, HUE) == (jitter["p"], jitter["p"], (-jitter["hue"], jitter["hue"]))
    assert (BRIGHTNESS, CONTRAST, SATURATION) == tuple((1 - jitter[k], 1 + jitter[k]) for k in ("brightness", "contrast", "saturation"))
    assert recipe["prefix_range"] == [1, recipe["num_patches"] - 1]  # sample_prefix_lengths draws 1 ... K-1


def test_the_fixtures_say_where_they_came_from() -> None:
    repos = {r["repo"]: r["commit"] for r in PROVENANCE["repos"]}
    assert set(repos) == {"apple/ml-l3m", "apple/ml-aim"} and all(len(commit) == 40 for commit in repos.values())
    for name, facts in PROVENANCE["fixtures"].items():
        assert (FIXTURES / f"{name}.safetensors").is_file() and facts["commit"] == repos[facts["repo"]], name
    assert sum(path.stat().st_size for path in FIXTURES.iterdir()) < 1_000_000


def report() -> None:
    """Print the measured differences (what the tests bound)."""
    for name, pairs in ALL_PAIRS.items():
        for what, (ours, official) in pairs().items():
            print(f"{name:9s} {what:60s} max |diff| {(ours.double() - official.double()).abs().max().item():.3g}")
    for what, score in {**augment_z_scores(), **prefix_length_z_scores()}.items():
        print(f"{'stats':9s} {what:60s} {score:.2f} standard errors")
