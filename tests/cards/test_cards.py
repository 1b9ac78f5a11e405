"""Card validation: good cards load, bad ones name their file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY_BACKBONE_CARD, write_card

from aimbench.cards.registry import CARDS_ENV, Registry, builtin_cards_root
from aimbench.errors import CardError, UserError

REPO = Path(__file__).resolve().parents[2]
DIGITS_CARD = (REPO / "tasks" / "digits.toml").read_text()


def test_shipped_cards_load_and_describe_their_variants() -> None:
    registry = Registry.load()
    assert {"vit-tiny-cls", "vit-tiny-reg", "dinov2-vits14", "dinov2-vitg14-reg"} <= set(registry.backbones)
    assert {"digits", "fashion-mnist"} <= set(registry.tasks)
    reg = registry.backbone("vit-tiny-reg")
    assert (reg.depth, reg.dim, reg.heads, reg.cls_token, reg.registers) == (6, 96, 3, False, 4)
    assert reg.prefix_layout == ("register",) * 4
    giant = registry.backbone("dinov2-vitg14-reg")
    assert giant.prefix_layout == ("cls",) + ("register",) * 4
    assert giant.preprocess.mean == (0.485, 0.456, 0.406)
    digits = registry.task("digits")
    assert digits.expected_sizes == {"train": 1347, "val": 150, "test": 300}
    assert digits.val.describe() == "stratified 0.1 of train, seed 0"
    assert builtin_cards_root() / "tasks" / "digits.toml" == digits.card_path


@pytest.mark.parametrize(
    ("replace", "by", "field", "problem"),
    [
        (
            "depth = 3\ndim = 32\nheads = 2\ncls_token = true",
            "dim = 32\nheads = 2\ncls_token = true",
            "variants.micro-cls.depth",
            "is required",
        ),
        ("depth = 3\n", 'depth = "three"\n', "variants.micro-cls.depth", "expected an integer"),
        ('adapter = "timm"', 'adapter = "keras"', "adapter", "expected one of timm"),
        ('interpolation = "bilinear"', 'interpolation = "cubic"', "variants.micro-cls.preprocess.interpolation", "bicubic"),
        ("mean = [0.5, 0.5, 0.5]", "mean = [0.5, 0.5]", "variants.micro-cls.preprocess.mean", "list of 3 numbers"),
        ("resize_size = 16", "resize_size = 8", "variants.micro-cls.preprocess.resize_size", ">= image_size"),
        ("heads = 2\ncls_token = true", "heads = 3\ncls_token = true", "variants.micro-cls.heads", "not divisible"),
        ("cls_token = true", "cls_token = true\ndepht = 3", "variants.micro-cls.depht", "unknown field"),
        ('family = "testfam"', 'family = "testfam"\n[variants', "<toml>", "not valid TOML"),
        (
            "cls_token = true",
            "cls_token = true\nresources = { memory_gb = { fp64 = 2 } }",
            "variants.micro-cls.resources.memory_gb.fp64",
            "unknown dtype",
        ),
        (
            "cls_token = true",
            "cls_token = true\nresources = { memory_gb = { bf16 = 0 } }",
            "variants.micro-cls.resources.memory_gb.bf16",
            "positive",
        ),
        ("cls_token = true", "cls_token = true\nresources = { gpus = 2 }", "variants.micro-cls.resources.gpus", "unknown field"),
        ("cls_token = true", "cls_token = true\nwindows = { middle = [1] }", "variants.micro-cls.windows.middle", "named last or best"),
        ("cls_token = true", "cls_token = true\nwindows = { last = [1, 3] }", "variants.micro-cls.windows.last", "block indices in 0..2"),
    ],
)
def test_malformed_backbone_card_names_file_and_field(tmp_path: Path, replace: str, by: str, field: str, problem: str) -> None:
    assert replace in TINY_BACKBONE_CARD
    path = write_card(tmp_path, "backbones", "broken", TINY_BACKBONE_CARD.replace(replace, by, 1))
    with pytest.raises(CardError) as info:
        Registry.load([tmp_path])
    assert info.value.path == str(path)
    assert info.value.field == field
    assert problem in str(info.value)
    assert str(info.value).startswith(f"{path}: field '{field}'")


@pytest.mark.parametrize(
    ("replace", "by", "field"),
    [
        ('name = "digits"', 'name = "digitz"', "name"),
        ("num_classes = 10", "num_classes = 1", "num_classes"),
        ('metric = "top1"', 'metric = "top5"', "metric"),
        ('metric = "top1"', 'metric = "top1"\naugmentation = "autoaugment"', "augmentation"),
        ('kind = "builtin"', 'kind = "s3"', "sources[0].kind"),
        ('loader = "sklearn-digits"', "", "sources[0].loader"),
        ("val = { fraction = 0.1, seed = 0 }", "val = { fraction = 1.5 }", "splits.val.fraction"),
        ("val = { fraction = 0.1, seed = 0 }", 'val = { fraction = 0.1, split = "validation" }', "splits.val.split"),
        ("test = 300", "", "expected_sizes.test"),
    ],
)
def test_malformed_task_card_names_file_and_field(tmp_path: Path, replace: str, by: str, field: str) -> None:
    assert replace in DIGITS_CARD
    path = write_card(tmp_path, "tasks", "digits", DIGITS_CARD.replace(replace, by, 1))
    with pytest.raises(CardError) as info:
        Registry.load([tmp_path])
    assert (info.value.path, info.value.field) == (str(path), field)


def test_user_cards_come_from_option_and_environment(tmp_path: Path, tiny_cards: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "micro-cls" in Registry.load([tiny_cards]).backbones
    monkeypatch.setenv(CARDS_ENV, str(tiny_cards))
    assert "micro-patches" in Registry.load().backbones
    monkeypatch.setenv(CARDS_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="does not exist"):
        Registry.load()


def test_user_card_shadows_builtin_and_keeps_its_path(tmp_path: Path) -> None:
    path = write_card(tmp_path, "tasks", "digits", DIGITS_CARD.replace("version = 1", "version = 7"))
    task = Registry.load([tmp_path]).task("digits")
    assert (task.version, task.card_path) == (7, path)


def test_duplicate_variant_within_one_root_is_rejected(tmp_path: Path) -> None:
    write_card(tmp_path, "backbones", "a", TINY_BACKBONE_CARD)
    write_card(tmp_path, "backbones", "b", TINY_BACKBONE_CARD)
    with pytest.raises(CardError, match="also defined in"):
        Registry.load([tmp_path])


def test_unknown_names_suggest_close_matches() -> None:
    registry = Registry.load()
    with pytest.raises(UserError, match=r"unknown backbone 'vit-tiny-clz'; did you mean: vit-tiny-cls"):
        registry.backbone("vit-tiny-clz")
    with pytest.raises(UserError, match=r"unknown task 'fashion-mnsit'; did you mean: fashion-mnist"):
        registry.task("fashion-mnsit")
    with pytest.raises(UserError, match=r"see 'aimbench ls backbones'"):
        registry.backbone("zzzzzzzz")


def test_suites_expand_in_order_without_duplicates() -> None:
    registry = Registry.load()
    names = [t.name for t in registry.expand_tasks(["digits", "smoke"])]
    assert names == ["digits", "fashion-mnist"]


def test_probe_tokens_default_and_restriction(tmp_path: Path) -> None:
    registry = Registry.load()
    assert registry.backbone("vit-tiny-cls").probe_tokens == ("patch_mean", "cls")
    assert registry.backbone("vit-tiny-reg").probe_tokens == ("patch_mean",)
    restricted = TINY_BACKBONE_CARD.replace("cls_token = true", 'cls_token = true\nprobe_tokens = ["patch_mean"]', 1)
    write_card(tmp_path / "a", "backbones", "testfam", restricted)
    assert Registry.load([tmp_path / "a"]).backbone("micro-cls").probe_tokens == ("patch_mean",)
    impossible = TINY_BACKBONE_CARD.replace("cls_token = false", 'cls_token = false\nprobe_tokens = ["cls"]', 1)
    write_card(tmp_path / "b", "backbones", "testfam", impossible)
    with pytest.raises(CardError) as info:
        Registry.load([tmp_path / "b"])
    assert info.value.field == "variants.micro-patches.probe_tokens"


SUITE = """
name = "mine"
tasks = ["digits", "fashion-mnist"]
"""


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        (SUITE.replace('"fashion-mnist"]', '"fashion-mnsit"]'), "tasks", "unknown task 'fashion-mnsit'; did you mean: fashion-mnist"),
        (SUITE.replace('"fashion-mnist"]', '"digits"]'), "tasks", "lists digits more than once"),
        (SUITE + 'aliases = ["digits"]\n', "name", "'digits' is also a task name"),
        (SUITE.replace('name = "mine"', 'name = "other"'), "name", "must match the file name 'mine'"),
        (SUITE + "colour = 1\n", "colour", "unknown field"),
    ],
)
def test_bad_suite_cards_name_file_and_field(tmp_path: Path, text: str, field: str, problem: str) -> None:
    path = write_card(tmp_path, "tasks/suites", "mine", text)
    with pytest.raises(CardError) as info:
        Registry.load([tmp_path])
    assert info.value.path == str(path) and info.value.field == field and problem in str(info.value)


def test_user_suites_expand_in_their_order(tmp_path: Path) -> None:
    write_card(tmp_path, "tasks/suites", "mine", SUITE.replace('["digits", "fashion-mnist"]', '["fashion-mnist", "digits"]'))
    registry = Registry.load([tmp_path])
    assert [t.name for t in registry.expand_tasks(["mine"])] == ["fashion-mnist", "digits"]
    assert sorted(registry.suites_of("digits")) == ["mine", "smoke"]


DTD_CARD = (REPO / "tasks" / "dtd.toml").read_text()


@pytest.mark.parametrize(
    ("replace", "by", "field", "problem"),
    [
        ('md5 = "fff73e5086ae6bdbea199a49dfb8a4c1"', 'md5 = "fff73e50"', "sources[0].downloads[0].md5", "32 lower-case hex digits"),
        ('url = "https://www.robots', 'url = "ftp://www.robots', "sources[0].downloads[0].url", "an http(s) URL"),
        ('md5 = "fff73e5086ae6bdbea199a49dfb8a4c1"', "size = 0", "sources[0].downloads[0].size", "an integer >= 1"),
        ('md5 = "fff73e5086ae6bdbea199a49dfb8a4c1"', 'size = "1 GB"', "sources[0].downloads[0].size", "expected an integer"),
        ('md5 = "fff73e5086ae6bdbea199a49dfb8a4c1", ', "", "sources[0].downloads[0].md5", "or its exact size in bytes ('size')"),
        ('kind = "list"', 'kind = "wilds"\ndataset = "imagenet"', "sources[0].dataset", "one of iwildcam"),
        ('metric = "top1"', 'metric = "top1"\nsecondary_metrics = ["auroc"]', "secondary_metrics", "'auroc'"),
        ('image = "images/{0}"', 'image = "images/{0}"\nlabel_field = "1"', "sources[0].label_field", "expected an integer"),
        ('image = "images/{0}"', 'image = "images/{0}"\nshared_test_images = 0', "sources[0].shared_test_images", "an integer >= 1"),
    ],
)
def test_bad_task_source_fields_name_file_and_field(tmp_path: Path, replace: str, by: str, field: str, problem: str) -> None:
    assert replace in DTD_CARD
    path = write_card(tmp_path, "tasks", "dtd", DTD_CARD.replace(replace, by, 1))
    with pytest.raises(CardError) as info:
        Registry.load([tmp_path])
    assert info.value.path == str(path) and info.value.field == field and problem in str(info.value)


def test_tags_select_tasks_in_suite_order() -> None:
    registry = Registry.load()
    assert [t.name for t in registry.expand_tasks(["tag:medical"])] == ["camelyon17", "pcam", "rxrx1"]
    assert [t.name for t in registry.expand_tasks(["tag:satellite", "eurosat"])] == ["eurosat", "fmow"]
    with pytest.raises(UserError, match=r"unknown tag 'medicine'; known tags: .*medical"):
        registry.expand_tasks(["tag:medicine"])


def test_a_source_accepting_test_copies_says_so_in_the_split_policy_and_only_then(tmp_path: Path) -> None:
    write_card(tmp_path, "tasks", "dtd", DTD_CARD.replace('image = "images/{0}"', 'image = "images/{0}"\nshared_test_images = 3', 1))
    policy = Registry.load([tmp_path]).task("dtd").split_policy()
    assert policy["shared_test_images"] == "test images byte-identical to train or val accepted: up to 3 in its list copy"
    assert "shared_test_images" not in Registry.load([]).task("dtd").split_policy()
