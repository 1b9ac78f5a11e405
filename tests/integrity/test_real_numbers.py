"""No number is recorded that is not a real measurement: a catalogue through the real CLI.

Each case runs ``aimbench`` on a micro ViT and scikit-learn's digits with one input that would
have produced a number that measures nothing (NaN weights, a NaN in a protocol card, features or
heads that went non-finite, ...) and must end in exactly one ``error:`` line, exit code 2, no
traceback, and no record (nor any half-written file) in the results folder.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, run_cli, write_card
from PIL import Image
from safetensors.torch import save_file
from test_cli import assert_one_line_error

from aimbench.adapters import load_backbone
from aimbench.cards.registry import Registry

FAST = ("--protocol", "aim-v1", "--epochs", "2", "--limit", "60")


def eval_cell(tmp_path: Path, cards: Path, *extra: str) -> list[str]:
    """The arguments of one fast linear cell of micro-cls on digits."""
    return ["eval", "-b", "micro-cls", "-t", "digits", "--cards", str(cards), "--results", str(tmp_path / "results"), *FAST, *extra]


def assert_nothing_recorded(tmp_path: Path) -> None:
    """No record, and no temporary or partial file, anywhere under the results folder."""
    results = tmp_path / "results"
    runs = list((results / "runs").glob("*")) if (results / "runs").exists() else []
    assert not [p for p in runs if p.is_file()], runs
    assert not [p for p in results.rglob("*") if p.is_file() and re.search(r"\.(part|tmp)", p.name)]


def micro_state(cards: Path) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in load_backbone("micro-cls", registry=Registry.load([cards])).model.state_dict().items()}


def protocol_card(cards: Path, name: str, section: str, field: str, value: str) -> None:
    """A copy of aim-v1 named ``name`` whose ``[section] field`` is ``value`` (TOML)."""
    lines, current = [], ""
    for line in (REPO / "protocols" / "aim-v1.toml").read_text().splitlines():
        if line.startswith("["):
            current = line.strip("[]")
        if line.startswith("name = "):
            line = f'name = "{name}"'
        elif current == section and line.startswith(f"{field} = "):
            line = f'{field} = {{ value = {value}, source = "a test" }}'
        lines.append(line)
    write_card(cards, "protocols", name, "\n".join(lines) + "\n")


@pytest.mark.parametrize(("fmt", "bad"), [("safetensors", float("nan")), ("pt", float("inf"))], ids=["nan-safetensors", "inf-pt"])
def test_non_finite_weights_file_refused_naming_the_tensor(tmp_path: Path, tiny_cards: Path, fmt: str, bad: float) -> None:
    state = micro_state(tiny_cards)
    state["blocks.1.mlp.fc1.weight"][3, 5] = bad
    path = tmp_path / f"bad.{fmt}"
    save_file(state, str(path)) if fmt == "safetensors" else torch.save(state, path)
    proc = run_cli(*eval_cell(tmp_path, tiny_cards, "--weights", str(path)))
    assert_one_line_error(proc, str(path), "tensor 'blocks.1.mlp.fc1.weight' holds NaN or inf")
    assert_nothing_recorded(tmp_path)


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [
        ("linear", "learning_rates", "[nan]"),
        ("linear", "weight_decays", "[0.0, nan]"),
        ("linear", "warmup_fraction", "nan"),
        ("knn", "temperature", "nan"),
        ("splits", "val_fraction", "nan"),
        ("linear", "learning_rates", "[inf]"),
    ],
    ids=["lr-nan", "wd-nan", "warmup-nan", "temperature-nan", "val-fraction-nan", "lr-inf"],
)
def test_protocol_card_with_a_non_finite_field_refused_at_load(
    tmp_path: Path, tiny_cards: Path, section: str, field: str, value: str
) -> None:
    protocol_card(tiny_cards, "broken", section, field, value)
    proc = run_cli(*eval_cell(tmp_path, tiny_cards, "--protocol", "broken"))
    assert_one_line_error(proc, "broken.toml", f"{section}.{field}", "expected a finite number")
    assert_nothing_recorded(tmp_path)


def test_backbone_card_with_a_nan_mean_refused_at_load(tmp_path: Path, tiny_cards: Path) -> None:
    card = tiny_cards / "backbones" / "testfam.toml"
    card.write_text(card.read_text().replace("mean = [0.5, 0.5, 0.5]", "mean = [0.5, nan, 0.5]"))
    proc = run_cli(*eval_cell(tmp_path, tiny_cards))
    assert_one_line_error(proc, "testfam.toml", "mean", "numbers (finite)")
    assert_nothing_recorded(tmp_path)


def test_eval_option_inf_refused(tmp_path: Path, tiny_cards: Path) -> None:
    proc = run_cli(*eval_cell(tmp_path, tiny_cards, "--memory-gb", "inf"))
    assert_one_line_error(proc, "--memory-gb must be a positive number")


def test_task_card_with_a_nan_val_fraction_refused_at_load(tmp_path: Path, tiny_cards: Path) -> None:
    card = (REPO / "tasks" / "digits.toml").read_text().replace('name = "digits"', 'name = "nanval"')
    write_card(tiny_cards, "tasks", "nanval", card.replace("fraction = 0.1", "fraction = nan"))
    assert_one_line_error(run_cli(*eval_cell(tmp_path, tiny_cards, "-t", "nanval")), "nanval.toml", "splits.val.fraction", "finite")
    assert_nothing_recorded(tmp_path)


@pytest.mark.parametrize("huge", ["classes", "grid"])
def test_100000_classes_or_a_200000_point_grid_is_refused_before_any_work(tmp_path: Path, tiny_cards: Path, huge: str) -> None:
    """Heads that cannot fit the memory budget, by the estimate the plan prints, not a huge allocation later."""
    if huge == "classes":
        card = (REPO / "tasks" / "digits.toml").read_text().replace('name = "digits"', 'name = "many"')
        write_card(tiny_cards, "tasks", "many", card.replace("num_classes = 10", "num_classes = 100000"))
        extra = ("-t", "many")
    else:
        protocol_card(tiny_cards, "huge", "linear", "learning_rates", repr(np.geomspace(1e-6, 1, 200_000).tolist()))
        extra = ("--protocol", "huge")
    proc = run_cli(*eval_cell(tmp_path, tiny_cards, *extra, "--memory-gb", "1", "--layers", "last"),
                   env={"AIMBENCH_CACHE": str(tmp_path / "cache")})  # fmt: skip
    assert_one_line_error(proc, "its heads need about", "more than --memory-gb (1.07 GB)")
    assert_nothing_recorded(tmp_path)
    assert not (tmp_path / "cache").exists()


def test_features_that_overflow_fail_the_cell_naming_the_layer_set(tmp_path: Path, tiny_cards: Path) -> None:
    state = micro_state(tiny_cards)
    state["blocks.2.attn.proj.bias"][:] = 3e38  # finite weights whose block-2 output (their sum) overflows to inf
    state["blocks.2.mlp.fc2.bias"][:] = 3e38
    path = tmp_path / "huge.safetensors"
    save_file(state, str(path))
    proc = run_cli(*eval_cell(tmp_path, tiny_cards, "--weights", str(path)))
    assert_one_line_error(proc, "the train features of layer set 2 (patch_mean)", "hold NaN or inf", "nothing was recorded")
    assert_nothing_recorded(tmp_path)


def test_a_diverging_head_fails_the_cell_naming_its_grid_point(tmp_path: Path, tiny_cards: Path) -> None:
    protocol_card(tiny_cards, "diverging", "linear", "learning_rates", "[1e-3, 1e38]")
    proc = run_cli(*eval_cell(tmp_path, tiny_cards, "--protocol", "diverging", "--layers", "last"))
    assert_one_line_error(proc, "went non-finite in training", "lr=1e+38", "nothing was recorded")
    assert_nothing_recorded(tmp_path)


# ---------------------------------------------------------------------------------------------
# test never overlaps train


def folder_task(cards: Path, name: str, sizes: tuple[int, int, int], splits: str = "") -> None:
    """An imagefolder task card over ``<data root>/<name>`` (3 classes), val a quarter of train."""
    splits = splits or 'train = "train"\ntest = "test"\nval = { fraction = 0.25, seed = 0 }'
    write_card(
        cards,
        "tasks",
        name,
        f"""
name = "{name}"
version = 1
description = "a test"
num_classes = 3
metric = "top1"
license = "CC0-1.0"
citation = "none"

[[sources]]
kind = "imagefolder"
dir = "{name}"

[splits]
{splits}

[expected_sizes]
train = {sizes[0]}
val = {sizes[1]}
test = {sizes[2]}
""",
    )


def write_digits_folder(root: Path, per_class: dict[str, int], mode: str = "L") -> None:
    """scikit-learn digits 0, 1, 2 under ``root/<split>/<class>/``: copies of the same pixels as 8-bit
    (``L``) or 16-bit (``I;16``) PNGs, or float TIFFs in [0, 1] (``F``)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    position = 0
    for split, count in per_class.items():
        for label in range(3):
            rows = [i for i, y in enumerate(digits.target) if y == label][position : position + count]
            for n, row in enumerate(rows):
                pixels = (digits.images[row] * 255 / 16).round().astype(np.uint8)  # 0..16 -> 0..255
                path = root / split / str(label) / f"{n:03d}.{'tif' if mode == 'F' else 'png'}"
                path.parent.mkdir(parents=True, exist_ok=True)
                if mode == "L":
                    Image.fromarray(pixels).save(path)
                elif mode == "F":  # v / 255 in [0, 1], which reading scales by 255
                    Image.fromarray(pixels.astype(np.float32) / 255).save(path)
                else:  # the same image at 16 bits: v * 257 spans 0..65535 exactly as v spans 0..255
                    Image.fromarray(pixels.astype(np.uint16) * 257).save(path)
        position += count


def test_a_test_folder_symlinked_to_train_is_refused(tmp_path: Path, tiny_cards: Path) -> None:
    data = tmp_path / "data"
    write_digits_folder(data / "mirror", {"train": 8})
    (data / "mirror" / "test").symlink_to(data / "mirror" / "train")
    folder_task(tiny_cards, "mirror", (18, 6, 24))
    proc = run_cli(*eval_cell(tmp_path, tiny_cards, "-t", "mirror", "--data-root", str(data)))
    assert_one_line_error(proc, "task 'mirror': test shares 18 image(s) with train", "give test its own images")
    assert_nothing_recorded(tmp_path)


def test_a_test_folder_copied_from_train_is_refused_naming_a_pair(tmp_path: Path, tiny_cards: Path) -> None:
    """``cp -r train test``: other files (other inodes) holding the same bytes, found by hashing them."""
    data = tmp_path / "data"
    write_digits_folder(data / "copied", {"train": 8})
    shutil.copytree(data / "copied" / "train", data / "copied" / "test")
    folder_task(tiny_cards, "copied", (18, 6, 24))
    proc = run_cli(*eval_cell(tmp_path, tiny_cards, "-t", "copied", "--data-root", str(data)))
    test, train = data / "copied" / "test" / "0" / "000.png", data / "copied" / "train" / "0" / "000.png"
    assert_one_line_error(proc, "task 'copied': 24 test image(s) hold the same bytes as train or val images", f"e.g. {test} and train {train}",
                          "give test its own images", "shared_test_images")  # fmt: skip
    assert_nothing_recorded(tmp_path)


def test_copies_a_card_source_accepts_are_evaluated_and_recorded(tmp_path: Path, tiny_cards: Path) -> None:
    """A benchmark published with a few byte-identical images in train and test: its card's source states how many."""
    data = tmp_path / "data"
    write_digits_folder(data / "dupes", {"train": 8, "test": 4})
    for name in ("000.png", "001.png"):  # two test images of class 1 are copies of train images
        shutil.copyfile(data / "dupes" / "train" / "1" / name, data / "dupes" / "test" / "1" / name)
    folder_task(tiny_cards, "dupes", (18, 6, 12))
    card = tiny_cards / "tasks" / "dupes.toml"
    for accepted, refused in ((1, True), (2, False)):
        card.write_text(
            re.sub(r'dir = "dupes"\n(shared_test_images = \d\n)?', f'dir = "dupes"\nshared_test_images = {accepted}\n', card.read_text())
        )
        proc = run_cli(*eval_cell(tmp_path, tiny_cards, "-t", "dupes", "--data-root", str(data)))
        if refused:
            assert_one_line_error(
                proc, "task 'dupes': 2 test image(s) hold the same bytes", "the card's source accepts 1 (shared_test_images)"
            )
            assert_nothing_recorded(tmp_path)
    assert proc.returncode == 0, proc.stderr
    [record] = [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs").glob("*dupes*.json")]
    accepted = "test images byte-identical to train or val accepted: up to 2 in its imagefolder copy"
    assert record["split_policy"]["shared_test_images"] == accepted


def test_val_and_test_named_as_train_are_refused(tmp_path: Path, tiny_cards: Path) -> None:
    card = (REPO / "tasks" / "digits.toml").read_text()
    card = card.replace('name = "digits"', 'name = "trainonly"').replace('test = "test"', 'test = "train"')
    write_card(tiny_cards, "tasks", "trainonly", card)
    proc = run_cli(*eval_cell(tmp_path, tiny_cards, "-t", "trainonly"))
    assert_one_line_error(proc, "task 'trainonly': test shares", "with train")
    assert_nothing_recorded(tmp_path)


def test_a_class_too_small_to_stratify_is_one_line_naming_it(tmp_path: Path, tiny_cards: Path) -> None:
    data = tmp_path / "data"
    write_digits_folder(data / "lonely", {"train": 4, "test": 2})
    for extra in sorted((data / "lonely" / "train" / "2").iterdir())[1:]:
        extra.unlink()  # class 2 keeps one train image
    folder_task(tiny_cards, "lonely", (7, 2, 6))
    proc = run_cli(*eval_cell(tmp_path, tiny_cards, "-t", "lonely", "--data-root", str(data)))
    assert_one_line_error(proc, "task 'lonely': class 2 has 1 train image", "needs at least 2 per class")
    assert_nothing_recorded(tmp_path)


# ---------------------------------------------------------------------------------------------
# pixels as they are


def test_16_bit_png_and_float_tiff_copies_score_exactly_as_the_8_bit_copy(tmp_path: Path, tiny_cards: Path) -> None:
    data = tmp_path / "data"
    scores = {}
    for name, mode in (("eight", "L"), ("sixteen", "I;16"), ("float", "F")):
        write_digits_folder(data / name, {"train": 12, "test": 6}, mode)
        folder_task(tiny_cards, name, (27, 9, 18))
        proc = run_cli(*eval_cell(tmp_path, tiny_cards, "-t", name, "--data-root", str(data)))
        assert proc.returncode == 0, proc.stderr
        [record] = [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs").glob(f"*{name}*.json")]
        scores[name] = [(layer["val_score"], layer["test_score"]) for layer in record["layers"]]
    assert Image.open(next((data / "sixteen" / "train" / "0").iterdir())).mode == "I;16"
    assert Image.open(next((data / "float" / "train" / "0").iterdir())).mode == "F"
    assert scores["sixteen"] == scores["eight"] == scores["float"] and len(scores["eight"]) == 3
    check = run_cli("tasks", "check", "sixteen", "--cards", str(tiny_cards), "--data-root", str(data))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "54 16-bit image(s), scaled to 8 bits when read" in " ".join(check.stdout.split())


# ---------------------------------------------------------------------------------------------
# identity by content, not by name


def test_a_cached_block_replaced_by_another_block_is_never_read_as_it(tmp_path: Path, tiny_cards: Path) -> None:
    env = {"AIMBENCH_CACHE": str(tmp_path / "cache")}
    first = run_cli(*eval_cell(tmp_path, tiny_cards, "--layers", "0,1"), env=env)
    assert first.returncode == 0, first.stderr
    [record_file] = (tmp_path / "results" / "runs").glob("*.json")
    before = json.loads(record_file.read_text())["layers"]
    folders = {p.parent for p in (tmp_path / "cache").rglob("block0.safetensors")}
    assert len(folders) == 3  # train, val, test
    for folder in folders:  # a valid block-1 file where block 0 was
        (folder / "block0.safetensors").write_bytes((folder / "block1.safetensors").read_bytes())
    again = run_cli(*eval_cell(tmp_path, tiny_cards, "--layers", "0,1", "--overwrite"), env=env)
    assert again.returncode == 0, again.stderr
    assert "say they are another block, split or cache key" in again.stderr
    after = json.loads(record_file.read_text())
    assert after["layers"] == before and after["probe_config"]["feature_cache"]["damaged_blocks"] == 3


def test_a_weights_file_that_needs_resampling_the_card_does_not_allow_is_refused(tmp_path: Path, tiny_cards: Path) -> None:
    """timm's filter would silently resample an 8x8 patch kernel to the card's 4x4: another network."""
    import timm

    model = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2)
    path = tmp_path / "patch8.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    proc = run_cli(*eval_cell(tmp_path, tiny_cards, "--weights", str(path)))
    assert_one_line_error(proc, "patch8.safetensors", "patch_embed.proj.weight (32, 3, 8, 8) -> (32, 3, 4, 4)", "resample_keys")
    assert_nothing_recorded(tmp_path)


def test_a_weights_file_the_checkpoint_filter_cannot_convert_is_one_line_naming_it(tmp_path: Path, tiny_cards: Path) -> None:
    state = micro_state(tiny_cards)
    state["pos_embed"] = state["pos_embed"].flatten().contiguous()  # 1-D: timm's filter cannot resample it
    path = tmp_path / "flat.safetensors"
    save_file(state, str(path))
    assert_one_line_error(run_cli(*eval_cell(tmp_path, tiny_cards, "--weights", str(path))), str(path), "timm's checkpoint filter failed")
    assert_nothing_recorded(tmp_path)


def test_a_pretraining_resume_on_other_images_is_refused_unless_allowed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(data / f"img_{i:02d}.png")
    run = ("pretrain", "aim-micro", "--data", str(data), "--steps", "2", "--batch-size", "4", "--save-every", "2", "--workers", "0",
           "--device", "cpu", "--out", str(tmp_path / "run"))  # fmt: skip
    assert run_cli(*run).returncode == 0
    (data / "added.png").write_bytes((data / "img_00.png").read_bytes())  # an image added between a kill and the resume
    assert_one_line_error(run_cli(*run, "--resume"), "--resume on other images than the run started with (12 image(s) then, 13 now)",
                          "--allow-data-change")  # fmt: skip
    assert run_cli(*run, "--resume", "--allow-data-change").returncode == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data_changes_at_steps"] == [2]
