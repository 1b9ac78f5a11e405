"""A cell's identity (aimbench.identity): keys and hashes are the ones records were written under
before identity had its own module, so every existing record is still found and skipped."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from aimbench.cards.registry import Registry
from aimbench.identity import IDENTITY_COLUMNS, SETUP_COLUMNS, CellIdentity, content_hash
from aimbench.launch.cells import plan_cells
from aimbench.probes.attentive.config import AttentiveProbeConfig
from aimbench.probes.linear.config import LinearProbeConfig
from aimbench.probes.protocol import default_config
from aimbench.report.setups import Setup

# (plan arguments, key, config hash) computed by aimbench at 24f9b8e, whose Cell hashed itself; fields
# the recipes gained since (dinov2-linear's, aim-v2's) stay out of the hash at the values those
# records trained with (ProbeConfig.ADDED_FIELDS). aim-v1 was then every kind's default: since
# linear and attentive default to dinov2-linear and aim-v2, those cells' keys name aim-v1, and
# their hashes are unchanged. The last two rows are the new defaults' cells, as first computed.
GOLDEN: list[tuple[dict[str, Any], str, str]] = [
    ({"backbones": ["aim-600m"], "tasks": ["digits"], "protocol": "aim-v1"}, "aim-600m|digits|linear|0|protocol=aim-v1", "2c4e700b58d9"),
    (
        {
            "backbones": ["aim-600m"],
            "tasks": ["digits"],
            "probe": "attentive",
            "limit": 300,
            "dtype": "bf16",
            "layers": "last",
            "protocol": "aim-v1",
        },
        "aim-600m|digits|attentive|0|limit=300|bf16|layers=last|protocol=aim-v1",
        "053b148a0fd4",
    ),
    ({"backbones": ["aim-600m"], "tasks": ["digits"], "probe": "knn", "overrides": {"epochs": 3}}, "aim-600m|digits|knn|0", "902a9aca6d1b"),
    (
        {"backbones": ["vit-tiny-cls"], "tasks": ["digits"], "overrides": {"epochs": 3}, "protocol": "aimbench-fast", "seeds": [2]},
        "vit-tiny-cls|digits|linear|2|protocol=aimbench-fast+epochs=3",
        "a0e26bb0c5a5",
    ),
    (
        {"backbones": ["aim-600m"], "tasks": ["imagenet-1k"], "probe": "official", "layers": "last"},
        "aim-600m|imagenet-1k|official:last|0",
        "53fd17558a37",
    ),
    ({"backbones": ["aim-600m"], "tasks": ["digits"]}, "aim-600m|digits|linear|0", "92e8325563bc"),
    ({"backbones": ["aim-600m"], "tasks": ["digits"], "probe": "attentive"}, "aim-600m|digits|attentive|0", "365e4f0161c6"),
]


@pytest.mark.parametrize(("arguments", "key", "config_hash"), GOLDEN, ids=[key for _, key, _ in GOLDEN])
def test_identities_are_the_ones_existing_records_carry(arguments: dict[str, Any], key: str, config_hash: str) -> None:
    registry = Registry.load()
    [cell] = plan_cells(registry, **arguments)
    identity = cell.identity(registry)
    assert (identity.key, identity.config_hash) == (key, config_hash)
    assert identity.record_name == f"{cell.backbone}__{cell.task}__{cell.probe}__seed{cell.seed}__{config_hash}.json"
    assert identity.stem == identity.record_name.removesuffix(".json")


def test_released_heads_follow_no_protocol_and_keep_their_head_out_of_the_key() -> None:
    registry = Registry.load()
    [cell] = plan_cells(registry, ["aim-600m"], ["imagenet-1k"], probe="official", layers="best")
    identity = cell.identity(registry)
    assert (identity.protocol, identity.layers, identity.layers_in_key) == ("", "best", False)


def test_the_key_spells_out_only_what_differs_from_the_defaults() -> None:
    base = {"backbone": "b", "task": "t", "probe": "linear", "seed": 0, "layers": "all", "limit": None, "dtype": "fp32"}
    plain = CellIdentity(**base, weights_key="", weights_name="", protocol="dinov2-linear", layers_in_key=False, config_hash="0" * 12)
    assert plain.key == "b|t|linear|0"  # the linear default
    assert dataclasses.replace(plain, protocol="aim-v1").key == "b|t|linear|0|protocol=aim-v1"
    assert dataclasses.replace(plain, probe="attentive", protocol="aim-v2").key == "b|t|attentive|0"  # the attentive default
    assert dataclasses.replace(plain, probe="knn", protocol="aim-v1").key == "b|t|knn|0"  # the kNN default
    spelt = CellIdentity(**{**base, "limit": 5, "dtype": "bf16"}, weights_key="random", weights_name="random", protocol="aim-v1+epochs=2",
                         layers_in_key=True, config_hash="0" * 12)  # fmt: skip
    assert spelt.key == "b@random|t|linear|0|limit=5|bf16|layers=all|protocol=aim-v1+epochs=2"


def test_the_hash_reads_content_not_key_order() -> None:
    assert content_hash({"a": 1, "b": [1, 2]}) == content_hash({"b": [1, 2], "a": 1}) != content_hash({"a": 2, "b": [1, 2]})
    assert len(content_hash({})) == 12


def test_reports_tell_setups_apart_by_the_identity_less_task_and_seed() -> None:
    assert set(SETUP_COLUMNS) == set(IDENTITY_COLUMNS) - {"task", "seed"}
    compared = [f.name for f in dataclasses.fields(Setup) if f.compare]
    assert compared == list(SETUP_COLUMNS)  # a setup is exactly these columns; weights_name is only its label


def test_attentive_fields_added_later_enter_the_hash_only_where_they_change_training() -> None:
    """AdamW's betas, min_lr and the view recipe came after attentive records existed: at the values
    those records trained with, the identity leaves them out (the golden attentive hash above
    holds); any other value is in it, so an aim-v2 cell is never taken for an aim-v1 one."""
    base = default_config("attentive", "aim-v1")
    assert not set(AttentiveProbeConfig.ADDED_FIELDS) & set(base.as_dict())
    other = {"betas": (0.9, 0.95), "min_lr": 1e-6, "crop_ratio": (0.5, 2.0), "interpolation": "bicubic", "flip_prob": 0.0,
             "rand_augment": "timm:rand-m9", "color_jitter": 0.4, "random_erasing": 0.0}  # fmt: skip
    assert set(other) == set(AttentiveProbeConfig.ADDED_FIELDS)
    for name, value in other.items():
        changed = default_config("attentive", "aim-v1", **{name: value}).as_dict()
        assert changed[name] == (list(value) if isinstance(value, tuple) else value)
        assert content_hash(changed) != content_hash(base.as_dict()), name
    registry = Registry.load()
    v1, v2 = (
        plan_cells(registry, ["aim-600m"], ["digits"], probe="attentive", protocol=name)[0].identity(registry)
        for name in ("aim-v1", "aim-v2")
    )
    assert (v1.key, v2.key) == ("aim-600m|digits|attentive|0|protocol=aim-v1", "aim-600m|digits|attentive|0")
    assert v1.config_hash != v2.config_hash


def test_linear_fields_added_with_dinov2_linear_enter_the_hash_only_away_from_aim_v1s_values() -> None:
    base = default_config("linear", "aim-v1")
    assert not {"momentum", "init_std", "block_norm", "token_kinds", "epoch_length"} & set(base.as_dict())
    other = {"optimizer": "sgd", "momentum": 0.9, "init_std": 0.01, "feature_norm": "none", "block_norm": "final",
             "token_kinds": ("cls",), "epoch_length": 10}  # fmt: skip
    assert set(other) == set(LinearProbeConfig.ADDED_FIELDS)
    for name, value in other.items():
        assert content_hash(default_config("linear", "aim-v1", **{name: value}).as_dict()) != content_hash(base.as_dict()), name
    registry = Registry.load()
    aim, dino = (
        plan_cells(registry, ["aim-600m"], ["digits"], protocol=name)[0].identity(registry) for name in ("aim-v1", "dinov2-linear")
    )
    assert (aim.key, dino.key) == ("aim-600m|digits|linear|0|protocol=aim-v1", "aim-600m|digits|linear|0")
    assert aim.config_hash != dino.config_hash
