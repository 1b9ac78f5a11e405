"""Online attentive-probe training: one micro_cls forward per image per epoch for the whole grid,
a grid head equals the head trained alone, kill-and-resume equals an uninterrupted run, and the
test split never influences selection."""

from __future__ import annotations

import weakref
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import count_forwards

from aimbench.adapters.base import Backbone
from aimbench.data import TaskSplits
from aimbench.data.images import LabelledImages
from aimbench.probes.attentive import training as attentive_training
from aimbench.probes.attentive.config import AttentiveProbeConfig
from aimbench.probes.attentive.training import (
    AttentiveTrainer,
    CachedTokens,
    eval_tokens,
    fit,
    train_attentive_probes,
)
from aimbench.probes.checkpoint import Checkpointing
from aimbench.probes.features.cache import Extraction, SplitKey, cached_tokens
from aimbench.probes.features.layer_sets import parse_layer_sets
from aimbench.probes.protocol import default_config

CONFIG = default_config(
    "attentive", learning_rates=(1e-3, 1e-2), weight_decays=(0.0, 0.1), epochs=2, batch_size=16, augmentation="rrc_flip"
)


def _run(micro_cls: Backbone, digits_48: TaskSplits, layers: str = "all,avg:1-2", config: AttentiveProbeConfig = CONFIG, **kw):  # type: ignore[no-untyped-def]
    sets = parse_layer_sets(layers, micro_cls.depth)
    return train_attentive_probes(micro_cls, digits_48.train, digits_48.val, digits_48.test, sets, 10, config, seed=0, **kw)


def test_one_backbone_forward_per_training_batch_serves_every_head(micro_cls: Backbone, digits_48: TaskSplits) -> None:
    calls = count_forwards(micro_cls)
    result = _run(micro_cls, digits_48, eval_batch_size=48)
    train_calls = calls[: CONFIG.epochs * 3]  # 48 images / batch 16 = 3 batches per epoch
    assert [n for n, _ in train_calls] == [16] * 6 and all(layers == [0, 1, 2] for _, layers in train_calls)
    assert sum(n for n, _ in train_calls) == CONFIG.epochs * len(digits_48.train)  # one forward per image per epoch
    assert len(calls) == 6 + 1 + 1  # + one val pass for all heads, one test pass for the selected heads
    assert len(result.heads) == 4 * 2 * 2  # 4 layer sets x 2 lrs x 2 wds
    assert [r.layer_set for r in result.layers] == ["0", "1", "2", "avg:1-2"]
    assert result.last.layer_set == "2" and all(r.token == "attentive" for r in result.layers)


def test_a_batchs_tokens_are_let_go_before_the_next_batch_is_forwarded(
    micro_cls: Backbone, digits_48: TaskSplits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The memory plan counts one training batch's tokens: nothing may hold them while the next
    batch is forwarded (a loop variable did, which doubled them)."""
    made: list[weakref.ref[torch.Tensor]] = []
    forward = attentive_training.forwarded_tokens

    def tracked(*args: Any, **kwargs: Any) -> list[torch.Tensor]:
        assert all(ref() is None for ref in made), "the previous batch's tokens are still held"
        tokens = forward(*args, **kwargs)
        made.extend(weakref.ref(t) for t in tokens)
        return tokens

    monkeypatch.setattr(attentive_training, "forwarded_tokens", tracked)
    fit(AttentiveTrainer(micro_cls, parse_layer_sets("all,avg:1-2", micro_cls.depth), 10, CONFIG, seed=0), digits_48.train)
    assert len(made) == 4 * 3 * CONFIG.epochs  # 4 layer sets, 3 batches an epoch


def test_a_grid_head_scores_as_the_same_head_trained_alone(micro_cls: Backbone, digits_48: TaskSplits) -> None:
    together = {(h.layer_set, h.hparams["lr"], h.hparams["weight_decay"]): h.val_score for h in _run(micro_cls, digits_48).heads}
    alone_config = replace(CONFIG, learning_rates=(1e-2,), weight_decays=(0.1,))
    alone = _run(micro_cls, digits_48, layers="avg:1-2", config=alone_config)
    assert alone.heads[0].val_score == together[("avg:1-2", 1e-2, 0.1)]
    assert alone.layers[0].test_score == pytest.approx(
        _run(micro_cls, digits_48, layers="avg:1-2", config=alone_config).layers[0].test_score
    )


def _weights(trainer: AttentiveTrainer) -> list[torch.Tensor]:
    return [t.detach().clone() for grid in trainer.grids for t in grid.state_dict().values()] + [
        t.clone() for t in trainer.norms.state_dict().values()
    ]


def test_kill_and_resume_gives_bit_identical_heads(micro_cls: Backbone, digits_48: TaskSplits, tmp_path: Path) -> None:
    sets = parse_layer_sets("all,avg:1-2", micro_cls.depth)
    whole = AttentiveTrainer(micro_cls, sets, 10, CONFIG, seed=0)
    fit(whole, digits_48.train)
    state = tmp_path / "state" / "cell.pt"

    def kill_at_four(done: int) -> None:
        if done == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(
            AttentiveTrainer(micro_cls, sets, 10, CONFIG, seed=0),
            digits_48.train,
            Checkpointing(state, "cell", every=1),
            on_step=kill_at_four,
        )
    resumed = AttentiveTrainer(micro_cls, sets, 10, CONFIG, seed=0)
    fit(resumed, digits_48.train, Checkpointing(state, "cell", every=1))
    assert (resumed.epoch, resumed.step) == (CONFIG.epochs, 0)
    for a, b in zip(_weights(whole), _weights(resumed)):
        assert torch.equal(a, b)
    assert not torch.equal(_weights(whole)[2], _weights(AttentiveTrainer(micro_cls, sets, 10, CONFIG, seed=0))[2])  # it trained


def test_kill_and_resume_matches_an_uninterrupted_run(micro_cls: Backbone, digits_48: TaskSplits, tmp_path: Path) -> None:
    uninterrupted = _run(micro_cls, digits_48)
    state = tmp_path / "state" / "cell.pt"

    def kill_at_four(done: int) -> None:
        if done == 4:  # mid-way through the second epoch
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(micro_cls, digits_48, checkpoint=Checkpointing(state, "cell", every=1), on_step=kill_at_four)
    assert state.is_file() and not list(state.parent.glob(".*.part"))
    steps: list[int] = []
    resumed = _run(micro_cls, digits_48, checkpoint=Checkpointing(state, "cell", every=1), on_step=steps.append)
    assert steps == [5, 6]  # only the remaining steps ran
    assert resumed == uninterrupted
    # a state saved for another configuration is never applied
    other = _run(micro_cls, digits_48, checkpoint=Checkpointing(state, "another-cell", every=1), on_step=steps.append)
    assert other == uninterrupted and steps[2:] == [1, 2, 3, 4, 5, 6]


def test_test_labels_never_change_selection(micro_cls: Backbone, digits_48: TaskSplits) -> None:
    clean = _run(micro_cls, digits_48)
    labels = digits_48.test.labels
    shuffled = LabelledImages(
        digits_48.test.get_image,
        labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1)).numpy()],
        digits_48.test.indices,
    )
    corrupted = _run(micro_cls, replace(digits_48, test=shuffled))
    assert corrupted.heads == clean.heads
    assert [(r.layer_set, r.hparams, r.val_score) for r in corrupted.layers] == [
        (r.layer_set, r.hparams, r.val_score) for r in clean.layers
    ]


def test_cached_mode_trains_and_scores_from_token_maps_without_the_backbone(
    micro_cls: Backbone, digits_48: TaskSplits, tmp_path: Path
) -> None:
    sets = parse_layer_sets("all,avg:1-2", micro_cls.depth)
    maps = tuple(
        CachedTokens(
            cached_tokens(micro_cls, images, [0, 1, 2], SplitKey(name, digits_48.source, digits_48.revision), Extraction(tmp_path))[0]
        )
        for name, images in (("train", digits_48.train), ("val", digits_48.val), ("test", digits_48.test))
    )
    calls = count_forwards(micro_cls)
    config = replace(CONFIG, data_mode="cached", augmentation="none")
    result = train_attentive_probes(micro_cls, digits_48.train, digits_48.val, digits_48.test, sets, 10, config, seed=0, cached=maps)
    assert calls == []  # every epoch and both evaluations read the cache
    assert len(result.heads) == 16 and [r.layer_set for r in result.layers] == ["0", "1", "2", "avg:1-2"]
    again = train_attentive_probes(micro_cls, digits_48.train, digits_48.val, digits_48.test, sets, 10, config, seed=0, cached=maps)
    assert again == result
    # a window's tokens are the mean of its blocks' cached maps
    window = maps[0].set_tokens([0, 5], [sets[-1]], torch.device("cpu"))[0]
    torch.testing.assert_close(window, (maps[0].blocks[1][[0, 5]].float() + maps[0].blocks[2][[0, 5]].float()) / 2)


def test_val_and_test_are_scored_in_the_same_precision(micro_cls: Backbone, digits_48: TaskSplits, monkeypatch: pytest.MonkeyPatch) -> None:
    """Heads may train in bf16 autocast (forced here on CPU, as on a GPU), but val (every head of
    the grid) and test (the exported heads) are both scored in fp32: the same logits to rounding."""
    monkeypatch.setattr(attentive_training, "TRAIN_AUTOCAST", ("cpu",))
    sets = parse_layer_sets("all,avg:1-2", micro_cls.depth)
    trainer = AttentiveTrainer(micro_cls, sets, 10, CONFIG, seed=0)
    fit(trainer, digits_48.train)
    tokens = next(eval_tokens(micro_cls, digits_48.val, sets, 48, 0))
    val_logits = trainer.logits(tokens)  # what selection reads
    assert val_logits.dtype == torch.float32
    for g, grid in enumerate(trainer.grids):
        for index in range(len(sets)):
            with torch.no_grad():
                test_logits = grid.head(index, trainer.norms.norms[index])(tokens[index])  # what the test score reads
            torch.testing.assert_close(val_logits[g, index], test_logits, rtol=1e-4, atol=1e-5)


def test_grad_clip_and_no_weight_decay_take_effect(micro_cls: Backbone, digits_48: TaskSplits) -> None:
    sets = parse_layer_sets("last", micro_cls.depth)
    tokens = next(eval_tokens(micro_cls, digits_48.train, sets, 16, 0))
    labels = torch.as_tensor(digits_48.train.labels[:16])

    def step(config: AttentiveProbeConfig) -> float:
        """How far one optimizer step moves the heads' parameters."""
        trainer = AttentiveTrainer(micro_cls, sets, 10, config, seed=0)
        before = [p.detach().clone() for grid in trainer.grids for p in grid.parameters()]
        trainer.train_step(tokens, labels)
        return max(float((p.detach() - b).abs().max()) for p, b in zip((p for grid in trainer.grids for p in grid.parameters()), before))

    no_decay = replace(CONFIG, weight_decays=(0.0,))  # only the gradient moves the heads
    assert step(replace(no_decay, grad_clip=1e-12)) < 1e-3 * step(no_decay)  # gradients far below Adam's epsilon barely move
    trainer = AttentiveTrainer(micro_cls, sets, 10, replace(CONFIG, no_weight_decay=("cls_token", "linear.bias")), seed=0)
    groups = trainer.optimizer.param_groups  # per grid point: decayed, then not decayed
    grid = trainer.grids[-1]  # wd 0.1
    assert groups[-1]["weight_decay"] == 0.0 and {id(p) for p in groups[-1]["params"]} == {id(grid.cls_token), id(grid.bias)}
    assert groups[-2]["weight_decay"] == 0.1 and {id(p) for p in groups[-2]["params"]} == {id(grid.k), id(grid.v), id(grid.weight)}
