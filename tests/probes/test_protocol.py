"""Resolving a protocol for a task: card, then task card, then explicit options, each value with
where it came from; the typed configs hold exactly the card's fields."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from conftest import write_card

from aimbench.cards.protocol_card import FIELDS, PROTOCOL_KINDS
from aimbench.cards.registry import Registry
from aimbench.data import load_task
from aimbench.errors import UserError
from aimbench.probes import REGISTRY, probe_kind
from aimbench.probes.config import Provenance
from aimbench.probes.protocol import default_config, protocol_record, resolve_config

REPO = Path(__file__).resolve().parents[2]
DIGITS_CARD = (REPO / "tasks" / "digits.toml").read_text()


def test_the_typed_configs_hold_exactly_the_cards_fields() -> None:
    """A card field the training code does not read, or a config field no card sets, fails here."""
    trained = {kind: probe_kind(kind).config_class for kind in REGISTRY if probe_kind(kind).trains}
    assert set(trained) == set(PROTOCOL_KINDS), "every trained probe kind has a protocol section, and only those"
    for kind, config in trained.items():
        names = {f.name for f in dataclasses.fields(config)} - {"sources", "micro_batch", "val_fraction"}
        assert names == set(FIELDS[kind]), kind
        assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(config) if f.name in FIELDS[kind]), kind


@pytest.mark.parametrize(("kind", "card"), [("attentive", "aim-v2"), ("linear", "dinov2-linear"), ("knn", "aim-v1")])
def test_each_kinds_default_card_is_its_default_config(kind: str, card: str) -> None:
    protocol = Registry.load().protocol(card)
    config = default_config(kind)
    for name, sourced in protocol.sections[kind].items():
        assert getattr(config, name) == sourced.value
        assert config.sources[name].source == sourced.source and config.sources[name].origin == "protocol"
    assert config.val_fraction == protocol.val_fraction.value


def test_task_card_overrides_the_protocol_and_options_override_both(tmp_path: Path) -> None:
    card = DIGITS_CARD + '\n[protocol.attentive]\nepochs = 50\nweight_decays = [0.0, 0.05]\naugmentation = "rrc_flip"\n'
    write_card(tmp_path, "tasks", "digits", card)
    registry = Registry.load([tmp_path])
    aim, task = registry.protocol("aim-v1"), registry.task("digits")

    config = resolve_config(aim, "attentive", task, {"epochs": 3})
    assert (config.epochs, config.weight_decays, config.augmentation, config.batch_size) == (3, (0.0, 0.05), "rrc_flip", 512)
    origins = {name: p.origin for name, p in config.sources.items()}
    assert (origins["epochs"], origins["weight_decays"], origins["augmentation"], origins["batch_size"]) == (
        "cli",
        "task",
        "task",
        "protocol",
    )
    assert (config.val_fraction, origins["val_fraction"]) == (0.1, "task")  # digits' own splits.val.fraction

    record = protocol_record("aim-v1", config)
    assert record["name"] == "aim-v1" and record["overridden"] == ["augmentation", "epochs", "val_fraction", "weight_decays"]
    assert record["fields"]["weight_decays"] == {"value": [0.0, 0.05], "source": "task card digits: weight_decays", "from": "task"}
    assert record["fields"]["learning_rates"]["source"] == aim.sections["attentive"]["learning_rates"].source

    linear = resolve_config(aim, "linear", task, {"epochs": 3})  # the attentive override leaves linear alone
    assert linear.epochs == 3 and linear.weight_decays == aim.sections["linear"]["weight_decays"].value


def test_cached_data_is_never_augmented() -> None:
    config = default_config("attentive", data_mode="cached")
    assert config.augmentation == "none" and config.sources["augmentation"].origin == "cli"
    assert default_config("linear", "aim-v1").augmentation == "none"  # aim-v1's linear probe reads cached features
    assert default_config("linear", "aim-v1", data_mode="online").augmentation == "rrc_flip"
    assert default_config("linear", data_mode="cached").augmentation == "none"  # dinov2-linear's online views, cached


def test_bad_overrides_and_missing_probes_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"unknown protocol field 'epoch'; did you mean: epochs"):
        default_config("linear", epoch=3)
    with pytest.raises(UserError, match=r"unknown protocol field 'zzz'; fields: augmentation, base_batch_size, "):
        default_config("linear", zzz=3)
    with pytest.raises(UserError, match=r"override epochs=0 for the linear probe: expected an integer >= 1"):
        default_config("linear", epochs=0)
    aim = (REPO / "protocols" / "aim-v1.toml").read_text()
    write_card(
        tmp_path, "protocols", "knn-only", aim[: aim.index("[attentive]")].replace('"aim-v1"', '"knn-only"') + aim[aim.index("[knn]") :]
    )
    registry = Registry.load([tmp_path])
    with pytest.raises(UserError, match="protocol 'knn-only' defines no linear probe"):
        resolve_config(registry.protocol("knn-only"), "linear", registry.task("digits"))


def test_a_task_without_val_is_carved_with_the_protocols_fraction(tmp_path: Path) -> None:
    text = DIGITS_CARD.replace("val = { fraction = 0.1, seed = 0 }", "val = { seed = 0 }").replace(
        "train = 1347\nval = 150\n", "train = 1497\n"
    )
    write_card(tmp_path, "tasks", "digits", text)
    registry = Registry.load([tmp_path])
    task = registry.task("digits")
    config = resolve_config(registry.protocol("aim-v1"), "knn", task)
    assert (config.val_fraction, config.sources["val_fraction"].origin) == (0.1, "protocol")
    assert load_task(task, val_fraction=config.val_fraction).sizes() == {"train": 1347, "val": 150, "test": 300}
    assert load_task(task, val_fraction=0.2).sizes() == {"train": 1197, "val": 300, "test": 300}
    with pytest.raises(UserError, match="takes its val fraction from the protocol"):
        load_task(task)


def test_a_protocols_per_task_values_come_between_its_section_and_the_task_card(tmp_path: Path) -> None:
    aim = (REPO / "protocols" / "aim-v1.toml").read_text().replace('name = "aim-v1"', 'name = "mine"')
    per_task = (
        '[attentive.tasks.digits]\nepochs = { value = 7, source = "a paper: 7" }\nbatch_size = { value = 64, source = "a paper: 64" }\n'
    )
    write_card(tmp_path, "protocols", "mine", aim.replace("\n[linear]\n", f"\n{per_task}\n[linear]\n", 1))
    write_card(tmp_path, "tasks", "digits", DIGITS_CARD + "\n[protocol.attentive]\nbatch_size = 32\n")
    registry = Registry.load([tmp_path])
    mine = registry.protocol("mine")

    config = resolve_config(mine, "attentive", registry.task("digits"))
    assert (config.epochs, config.batch_size) == (7, 32)  # the protocol's value for digits, then the task card's own
    assert config.sources["epochs"] == Provenance("[attentive.tasks.digits] a paper: 7", "protocol")
    assert config.sources["batch_size"].origin == "task"
    assert protocol_record("mine", config)["overridden"] == ["batch_size", "val_fraction"]  # a per-task value is the protocol's own
    assert resolve_config(mine, "attentive", registry.task("digits"), {"epochs": 3}).epochs == 3  # explicit options still win
    other = resolve_config(mine, "attentive", registry.task("fashion-mnist"))
    assert (other.epochs, other.batch_size) == (100, 512)  # other tasks: the section's values
    assert resolve_config(mine, "attentive").epochs == 100  # no task, no per-task values


def test_min_lr_must_stay_below_every_scaled_learning_rate() -> None:
    assert default_config("attentive", "aim-v1", min_lr=1e-5).min_lr == 1e-5
    with pytest.raises(UserError, match=r"min_lr 0.001 is not below the lowest scaled learning rate 0.0001"):
        default_config("attentive", "aim-v1", min_lr=1e-3)
