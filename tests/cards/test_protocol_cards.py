"""Protocol cards: the shipped recipes load with a source for every value, aim-v1 says what the
paper says, a bad card names its file and field, and task cards override fields the same way."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_card

from aimbench.cards.protocol_card import FIELDS, PROTOCOL_KINDS
from aimbench.cards.registry import Registry
from aimbench.errors import CardError, UserError
from aimbench.identity import DEFAULT_PROTOCOLS

REPO = Path(__file__).resolve().parents[2]
AIM_V1 = (REPO / "protocols" / "aim-v1.toml").read_text()
DIGITS_CARD = (REPO / "tasks" / "digits.toml").read_text()
NOT_PUBLISHED = "aimbench default: not published"


def assert_card_error(root: Path, kind: str, name: str, text: str, field: str, problem: str = "") -> None:
    """Loading ``text`` as card ``kind/name`` under ``root`` fails naming that file and ``field``."""
    path = write_card(root, kind, name, text)
    with pytest.raises(CardError) as info:
        Registry.load([root])
    assert (info.value.path, info.value.field) == (str(path), field)
    assert problem in str(info.value)


def test_shipped_protocols_define_every_field_with_a_source() -> None:
    registry = Registry.load()
    assert {"aim-v1", "aimbench-fast", "aim-v2", "dinov2-linear"} <= set(registry.protocols)
    assert set(DEFAULT_PROTOCOLS) == set(PROTOCOL_KINDS)  # every trained kind has a default recipe ...
    assert all(kind in registry.protocol(name).kinds for kind, name in DEFAULT_PROTOCOLS.items())  # ... that defines it
    assert DEFAULT_PROTOCOLS == {"attentive": "aim-v2", "linear": "dinov2-linear", "knn": "aim-v1"}  # docs/protocols.md says why
    assert registry.protocol("aim-v1").kinds == PROTOCOL_KINDS  # the AIM paper's card covers every probe kind
    assert registry.protocol("aim-v2").kinds == ("attentive",)  # the AIMv2 paper reports attentive probes only
    assert registry.protocol("dinov2-linear").kinds == ("linear",)  # DINOv2's linear recipe
    for protocol in registry.protocols.values():
        assert protocol.kinds and protocol.description
        per_task = [fields for tasks in protocol.task_sections.values() for fields in tasks.values()]
        assert all(set(tasks) <= set(registry.tasks) for tasks in protocol.task_sections.values())  # no misspelt task
        for section, fields in protocol.sections.items():
            assert set(fields) == set(FIELDS[section])
        for sourced in [s for fields in [*protocol.sections.values(), *per_task] for s in fields.values()]:
            # a source names a file, a paper section, or says it is aimbench's own choice
            assert sourced.source.startswith(
                (NOT_PUBLISHED, "unverified reading of the AIM paper", "AIMv2 paper", "ml-l3m", "facebookresearch/dino", "follows from")
            ), sourced


def test_aim_v1_follows_the_paper() -> None:
    """The attentive recipe of the AIM paper's appendix (AdamW, wd 0.1, lr 1e-4 ... 1e-2, cosine,
    100 epochs, batch 512, RandAugment + random erasing), Apple's wd exclusions, DINO's kNN."""
    aim = Registry.load().protocol("aim-v1")
    attentive = {name: sourced.value for name, sourced in aim.sections["attentive"].items()}
    assert attentive["learning_rates"][0] == 1e-4 and attentive["learning_rates"][-1] == 1e-2
    assert (attentive["weight_decays"], attentive["epochs"], attentive["batch_size"]) == ((0.1,), 100, 512)
    assert (attentive["augmentation"], attentive["data_mode"]) == ("strong", "online")
    assert attentive["no_weight_decay"] == ("linear.bias",)
    assert "wd_exclude" in aim.sections["attentive"]["no_weight_decay"].source
    knn = aim.sections["knn"]
    assert (knn["ks"].value, knn["temperature"].value) == ((10, 20, 100, 200), 0.07)
    assert all("eval_knn.py" in sourced.source for sourced in knn.values())


@pytest.mark.parametrize(
    ("replace", "by", "field", "problem"),
    [
        (
            'epochs = { value = 100, source = "unverified reading of the AIM paper appendix (attentive probe recipe; not re-checked against its table): 100 epochs" }',
            "",
            "attentive.epochs",
            "is required",
        ),
        (
            'epochs = { value = 100, source = "unverified reading of the AIM paper appendix (attentive probe recipe; not re-checked against its table): 100 epochs" }',
            "epochs = { value = 100 }",
            "attentive.epochs.source",
            "is required",
        ),
        (
            'epochs = { value = 100, source = "unverified reading of the AIM paper appendix (attentive probe recipe; not re-checked against its table): 100 epochs" }',
            "epochs = 100",
            "attentive.epochs",
            "value = ..., source =",
        ),
        ("epochs = { value = 100,", "epochs = { value = 0,", "attentive.epochs", "integer >= 1"),
        ("weight_decays = { value = [0.1],", "weight_decays = { value = [],", "attentive.weight_decays", "non-empty list"),
        ('augmentation = { value = "strong",', 'augmentation = { value = "mixup",', "attentive.augmentation", "expected one of rrc_flip"),
        (
            'no_weight_decay = { value = ["linear.bias"],',
            'no_weight_decay = { value = ["bias"],',
            "attentive.no_weight_decay",
            "linear.bias",
        ),
        ("grad_clip = { value = false,", "grad_clip = { value = -1,", "attentive.grad_clip", "positive max norm"),
        ("[knn]\n", '[knn]\nnorm = { value = 2, source = "x" }\n', "knn.norm", "unknown field"),
        ("temperature = { value = 0.07,", 'temperature = { value = 0.07, note = "x",', "knn.temperature.note", "unknown field"),
        ('name = "aim-v1"', 'name = "aim-v2"', "name", "must match the file name"),
        ("val_fraction = { value = 0.1,", "val_fraction = { value = 1.0,", "splits.val_fraction", "(0, 1)"),
        ("betas = { value = [0.9, 0.999],", "betas = { value = [0.9],", "attentive.betas", "list of two numbers"),
        ('optimizer = { value = "adamw",', 'optimizer = { value = "lbfgs",', "linear.optimizer", "expected one of adamw, sgd"),
        ('token_kinds = { value = ["patch_mean",', 'token_kinds = { value = ["mean",', "linear.token_kinds", "expected one of patch_mean"),
        ("epoch_length = { value = 0,", "epoch_length = { value = -1,", "linear.epoch_length", "integer >= 0"),
        ("crop_ratio = { value = [0.75, 1.3333333333333333],", "crop_ratio = { value = [1.5, 0.5],", "attentive.crop_ratio", "[low, high]"),
        ('interpolation = { value = "backbone",', 'interpolation = { value = "lanczos",', "attentive.interpolation", "expected one of"),
        ("flip_prob = { value = 0.5,", "flip_prob = { value = 1.5,", "attentive.flip_prob", "[0, 1]"),
        ("color_jitter = { value = false,", "color_jitter = { value = 0,", "attentive.color_jitter", "positive jitter strength or false"),
        (
            'rand_augment = { value = "torchvision:rand-m9-n2",',
            'rand_augment = { value = "torchvision:rand-m9-mstd0.5",',
            "attentive.rand_augment",
            "RandAugment policy",
        ),  # torchvision's RandAugment has no magnitude noise
        (
            'rand_augment = { value = "torchvision:rand-m9-n2",',
            'rand_augment = { value = "timm:rand-m9.5",',
            "attentive.rand_augment",
            "RandAugment policy",
        ),  # a whole magnitude
        (
            'rand_augment = { value = "torchvision:rand-m9-n2",',
            'rand_augment = { value = "rand-m9-n2",',
            "attentive.rand_augment",
            "RandAugment policy",
        ),  # which library's
        (
            "[linear]\n",
            '[attentive.tasks.digits]\nepoch = { value = 5, source = "x" }\n\n[linear]\n',
            "attentive.tasks.digits.epoch",
            "unknown field",
        ),
        (
            "[linear]\n",
            '[attentive.tasks.digits]\nepochs = { value = 0, source = "x" }\n\n[linear]\n',
            "attentive.tasks.digits.epochs",
            "integer >= 1",
        ),
        (
            "[linear]\n",
            "[attentive.tasks.digits]\nepochs = { value = 5 }\n\n[linear]\n",
            "attentive.tasks.digits.epochs.source",
            "is required",
        ),
        ("[knn]\n", '[splits.tasks.digits]\nval_fraction = { value = 0.2, source = "x" }\n\n[knn]\n', "splits.tasks", "unknown field"),
    ],
)
def test_malformed_protocol_card_names_file_and_field(tmp_path: Path, replace: str, by: str, field: str, problem: str) -> None:
    assert replace in AIM_V1
    assert_card_error(tmp_path, "protocols", "aim-v1", AIM_V1.replace(replace, by, 1), field, problem)


def test_a_protocol_may_leave_out_probes_but_not_all(tmp_path: Path) -> None:
    knn_only = AIM_V1[: AIM_V1.index("[attentive]")] + AIM_V1[AIM_V1.index("[knn]") :]
    write_card(tmp_path, "protocols", "knn-only", knn_only.replace('name = "aim-v1"', 'name = "knn-only"'))
    assert Registry.load([tmp_path]).protocol("knn-only").kinds == ("knn",)
    nothing = AIM_V1[: AIM_V1.index("[attentive]")].replace('name = "aim-v1"', 'name = "none"')
    assert_card_error(tmp_path / "other", "protocols", "none", nothing, "attentive", "at least one of")


def test_user_protocols_come_from_card_dirs_and_unknown_names_suggest_close_ones(tmp_path: Path) -> None:
    write_card(tmp_path, "protocols", "mine", AIM_V1.replace('name = "aim-v1"', 'name = "mine"'))
    registry = Registry.load([tmp_path])  # a card dir with only protocols/ is a card dir
    assert registry.protocol("mine").card_path == tmp_path / "protocols" / "mine.toml"
    with pytest.raises(UserError, match=r"unknown protocol 'aim-v3'; did you mean: aim-v2, aim-v1"):
        registry.protocol("aim-v3")


@pytest.mark.parametrize(
    ("add", "field", "problem"),
    [
        ("[protocol.attentive]\nepochs = 0\n", "protocol.attentive.epochs", "integer >= 1"),
        ("[protocol.attentive]\nepoch = 5\n", "protocol.attentive.epoch", "unknown field"),
        ("[protocol.svm]\nepochs = 5\n", "protocol.svm", "expected a probe among"),
        ("[protocol.splits]\nval_fraction = 0.2\n", "protocol.splits", "splits.val.fraction"),
        ('[protocol.linear]\naugmentation = "none"\n', "augmentation", "give it once"),
    ],
)
def test_bad_task_overrides_name_file_and_field(tmp_path: Path, add: str, field: str, problem: str) -> None:
    text = DIGITS_CARD.replace('metric = "top1"', 'metric = "top1"\naugmentation = "strong"') if "give it once" in problem else DIGITS_CARD
    assert_card_error(tmp_path, "tasks", "digits", text + "\n" + add, field, problem)


def test_task_overrides_are_read_per_probe(tmp_path: Path) -> None:
    text = DIGITS_CARD.replace('metric = "top1"', 'metric = "top1"\naugmentation = "none"')
    write_card(tmp_path, "tasks", "digits", text + "\n[protocol.attentive]\nepochs = 50\nlearning_rates = [1e-3]\n")
    task = Registry.load([tmp_path]).task("digits")
    assert task.protocol == {
        "attentive": {"epochs": 50, "learning_rates": (1e-3,), "augmentation": "none"},
        "linear": {"augmentation": "none"},
    }


def test_a_task_without_val_takes_the_protocols_fraction_and_states_the_whole_train_split(tmp_path: Path) -> None:
    text = DIGITS_CARD.replace("val = { fraction = 0.1, seed = 0 }", "val = { seed = 0 }")
    write_card(tmp_path, "tasks", "digits", text.replace("train = 1347\nval = 150\n", "train = 1497\n"))
    task = Registry.load([tmp_path]).task("digits")
    assert task.expected_sizes == {"train": 1497, "test": 300}
    assert task.split_policy(0.2)["val"] == "stratified 0.2 of train, seed 0 (the protocol's val_fraction)"
    assert_card_error(tmp_path / "stated", "tasks", "digits", text, "expected_sizes.val")  # a val size depends on the protocol: not stated
