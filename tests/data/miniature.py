"""Miniature copies of a task's data, written in the layout of the card's own first source.

A miniature has a few tiny images per class (3 classes by default) written exactly where and how
the official release (or the Hugging Face repository) puts them, so the real readers, split
carving, ``tasks check`` and a probe all run on it offline. :func:`miniature_card` rewrites the
card's class count and expected split sizes to the miniature's; everything else is the card as
shipped.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from wilds_miniature import write_wilds

from aimbench.cards.task_card import SourceSpec, TaskSpec
from aimbench.data.hf_source import snapshot_dir

IMAGE_SIDE = 8


def tiny_image(label: int, rng: np.random.Generator) -> Image.Image:
    """A class-tinted noise image: learnable by a probe, never identical to another."""
    tint = np.array([(label * 97) % 256, (label * 53 + 80) % 256, (label * 29 + 160) % 256])
    pixels = np.clip(tint + rng.integers(-40, 40, (IMAGE_SIDE, IMAGE_SIDE, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def save_image(path: Path, label: int, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tiny_image(label, rng).save(path)


def split_counts(task: TaskSpec, classes: int) -> dict[str, int]:
    """Images per class of each split the source must hold, enough for a stratified val carve."""
    counts = {task.train_split: 4, task.test_split: 2}
    if task.val.split is not None:
        counts[task.val.split] = 2
    else:
        counts[task.train_split] = max(4, math.ceil(1.0 / task.val.fraction) + 1)
    return counts


def expected_sizes(task: TaskSpec, classes: int) -> dict[str, int]:
    counts = split_counts(task, classes)
    train = counts[task.train_split] * classes
    if task.val.split is not None:
        return {"train": train, "val": counts[task.val.split] * classes, "test": counts[task.test_split] * classes}
    val = math.ceil(task.val.fraction * train)  # scikit-learn's rounding of a fractional test_size
    return {"train": train - val, "val": val, "test": counts[task.test_split] * classes}


def _source_counts(task: TaskSpec, source: SourceSpec, classes: int) -> dict[str, int]:
    """Per-class counts keyed by the source's own split names."""
    return {source.source_split(name): count for name, count in split_counts(task, classes).items()}


def _write_imagefolder(task: TaskSpec, source: SourceSpec, root: Path, classes: int, rng: np.random.Generator) -> None:
    folder = root / source.options["dir"]
    for split, count in _source_counts(task, source, classes).items():
        for label in range(classes):
            for k in range(count):
                save_image(folder / split / f"n{label:08d}" / f"{split}_{label}_{k}.JPEG", label, rng)


def _write_list(task: TaskSpec, source: SourceSpec, root: Path, classes: int, rng: np.random.Generator) -> None:
    """List files in the card's line format: field 0 names the image, the label field (if any) its class."""
    opts = source.options
    folder = root / opts["dir"]
    names = [f"class{label}" for label in range(classes)]
    if opts["classes_file"]:
        (folder / opts["classes_file"]).parent.mkdir(parents=True, exist_ok=True)
        (folder / opts["classes_file"]).write_text("\n".join(names) + "\n")
    suffix = "" if re.search(r"\.\w+$", opts["image"]) else ".jpg"
    for split, count in _source_counts(task, source, classes).items():
        lines = []
        for label in range(classes):
            for k in range(count):
                fields = [f"{names[label]}/{split}_{label}_{k}{suffix}"]
                if opts["label_field"] is not None:
                    fields[0] = f"images_of/{names[label]}_{split}_{k}{suffix}"
                    fields += ["1"] * opts["label_field"]
                    fields[opts["label_field"]] = str(label + (opts["label_base"] or 0))
                save_image(folder / opts["image"].format(*fields), label, rng)
                lines.append(" ".join(fields))
        list_file = folder / opts["lists"][split]
        list_file.parent.mkdir(parents=True, exist_ok=True)
        list_file.write_text("\n".join(lines) + "\n")


def _write_coco_json(task: TaskSpec, source: SourceSpec, root: Path, classes: int, rng: np.random.Generator) -> None:
    folder = root / source.options["dir"]
    image_id = 0
    for split, count in _source_counts(task, source, classes).items():
        document = {"images": [], "annotations": [], "categories": [{"id": c, "name": f"taxon{c}"} for c in range(classes)]}
        for label in range(classes):
            for _ in range(count):
                file_name = f"train_val2018/Kingdom/{label}/{image_id:06d}.jpg"
                save_image(folder / file_name, label, rng)
                document["images"].append({"id": image_id, "file_name": file_name, "width": IMAGE_SIDE, "height": IMAGE_SIDE})
                document["annotations"].append({"id": image_id, "image_id": image_id, "category_id": label})
                image_id += 1
        (folder / source.options["annotations"][split]).write_text(json.dumps(document))


def _write_hf(task: TaskSpec, source: SourceSpec, root: Path, classes: int, rng: np.random.Generator) -> None:
    """A snapshot of a hub dataset repository: parquet shards plus the README that names the splits."""
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as HFImage

    opts = source.options
    folder = snapshot_dir(source, root)
    config = opts["config"] or "default"
    entries = []
    for split, count in _source_counts(task, source, classes).items():
        labels = [label for label in range(classes) for _ in range(count)]
        features = Features({opts["image_column"]: HFImage(), opts["label_column"]: ClassLabel(num_classes=classes)})
        data = {opts["image_column"]: [tiny_image(y, rng) for y in labels], opts["label_column"]: labels}
        pattern = (opts["data_files"] or {}).get(split, f"{config}/{split}-*")
        shard = folder / pattern.replace("*", "00000-of-00001.parquet")
        shard.parent.mkdir(parents=True, exist_ok=True)
        Dataset.from_dict(data, features=features).to_parquet(str(shard))
        entries.append(f"  - split: {split}\n    path: {pattern}")
    readme = f"---\nconfigs:\n- config_name: {config}\n  data_files:\n" + "\n".join(entries) + "\n---\n"
    (folder / "README.md").write_text(readme)


WRITERS: dict[str, Callable[..., None]] = {
    "imagefolder": _write_imagefolder,
    "list": _write_list,
    "coco_json": _write_coco_json,
    "hf": _write_hf,
    "wilds": lambda task, source, root, classes, rng: write_wilds(source, root, _source_counts(task, source, classes), classes, rng),
}


def write_miniature(task: TaskSpec, data_root: Path, classes: int = 3, seed: int = 0) -> dict[str, int]:
    """Write a miniature of ``task`` in its first source's layout; return its expected split sizes."""
    source = task.sources[0]
    WRITERS[source.kind](task, source, data_root, classes, np.random.default_rng(seed))
    return expected_sizes(task, classes)


def miniature_card(task: TaskSpec, classes: int, sizes: dict[str, int]) -> str:
    """The shipped card's text with the miniature's class count and split sizes."""
    text = task.card_path.read_text()
    text = re.sub(r"(?m)^num_classes = \d+$", f"num_classes = {classes}", text)
    for split, size in sizes.items():
        text = re.sub(rf"(?ms)(^\[expected_sizes\].*?^{split} = )\d+$", rf"\g<1>{size}", text)
    return text
