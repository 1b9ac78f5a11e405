"""A protocol's ``no_weight_decay`` names parameters of the heads it trains: every name a shipped
protocol lists takes at least one tensor out of weight decay. A name that matches nothing is
silently ignored by the optimizer, as 'linear.bias' would be on a head without a linear bias (ml-aim's
AttentionPoolingClassifier has none since its AIMv2 release; aimbench's trained heads have one)."""

from __future__ import annotations

import pytest
import torch

from aimbench.adapters.base import Backbone
from aimbench.cards.protocol_card import PARAMETERS
from aimbench.cards.registry import Registry
from aimbench.probes.attentive.training import AttentiveTrainer
from aimbench.probes.config import TrainedProbeConfig, grid_points
from aimbench.probes.features.layer_sets import parse_layer_sets
from aimbench.probes.linear.config import LinearProbeConfig
from aimbench.probes.linear.heads import LinearHeads
from aimbench.probes.protocol import resolve_config

KINDS = ("attentive", "linear")  # the trained probes with a no_weight_decay
CLASSES = 3


def undecayed(kind: str, config: TrainedProbeConfig, backbone: Backbone) -> list[list[torch.Tensor]]:
    """Per grid point, the tensors the probe's own optimizer trains without weight decay."""
    if kind == "attentive":
        optimizer = AttentiveTrainer(backbone, parse_layer_sets("last", backbone.depth), CLASSES, config, seed=0).optimizer
    else:
        assert isinstance(config, LinearProbeConfig)
        heads = LinearHeads(config, [(0,)], {0: list(range(len(grid_points(config))))}, (backbone.dim, CLASSES), 1, torch.device("cpu"))
        optimizer = heads.optimizer
    return [group["params"] for group in optimizer.param_groups if group["weight_decay"] == 0.0]


@pytest.mark.parametrize("kind", KINDS)
def test_every_shipped_no_weight_decay_name_takes_a_parameter_out_of_decay(kind: str, micro_cls: Backbone) -> None:
    registry = Registry.load()
    checked = 0
    for protocol in registry.protocols.values():
        if kind not in protocol.sections:
            continue
        per_task = [fields["no_weight_decay"].value for fields in protocol.task_sections[kind].values() if "no_weight_decay" in fields]
        for name in {name for names in [protocol.sections[kind]["no_weight_decay"].value, *per_task] for name in names}:
            # one name at a time, on a grid that decays everything else, so each name must find its own tensors
            config = resolve_config(protocol, kind, registry.task("digits"), {"weight_decays": (0.1,), "no_weight_decay": (name,)})
            groups = undecayed(kind, config, micro_cls)
            assert groups and all(groups), f"{protocol.name} [{kind}] no_weight_decay '{name}' matches no parameter"
            checked += 1
    assert checked, kind


@pytest.mark.parametrize("kind", KINDS)
def test_every_name_a_card_may_list_is_a_parameter_of_the_head(kind: str, micro_cls: Backbone) -> None:
    """The names protocol cards are checked against (PARAMETERS) all name tensors of the trained head."""
    aim = Registry.load().protocol("aim-v1")

    def excluding(*names: str) -> list[list[torch.Tensor]]:
        return undecayed(kind, resolve_config(aim, kind, None, {"weight_decays": (0.1,), "no_weight_decay": names}), micro_cls)

    assert not any(excluding())  # nothing excluded: every tensor decayed
    assert all(all(excluding(name)) for name in PARAMETERS[kind])


def test_a_trained_attentive_head_is_exported_with_the_names_cards_use(micro_cls: Backbone) -> None:
    config = resolve_config(Registry.load().protocol("aim-v1"), "attentive")
    trainer = AttentiveTrainer(micro_cls, parse_layer_sets("last", micro_cls.depth), CLASSES, config, seed=0)
    head = trainer.grids[0].head(0, trainer.norms.norm(0))
    assert {name for name, _ in head.named_parameters()} == set(PARAMETERS["attentive"])  # linear.bias included
