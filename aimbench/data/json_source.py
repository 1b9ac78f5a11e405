"""COCO-style JSON annotations for classification: iNaturalist's ``train2018.json`` layout.

Each file has ``images`` (``id``, ``file_name`` relative to the source folder), ``annotations``
(``image_id``, ``category_id``) and ``categories`` (``id``). Labels index the sorted category
ids of all files together, which for iNaturalist 2018 (ids 0..8141) is the id itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aimbench.cards.task_card import SourceSpec
from aimbench.data.source_base import LoadedSource, SourceReader, file_images, listing_digest, require_files
from aimbench.errors import UserError
from aimbench.special_files import require_regular


def _folder(spec: SourceSpec, data_root: Path) -> Path:
    folder = data_root / spec.options["dir"]
    require_files(folder, list(spec.options["annotations"].values()), "unpack the images and annotation files")
    return folder


def _read_json(path: Path) -> dict[str, Any]:
    require_regular(path, "annotation file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"corrupt data file {path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise UserError(f"corrupt data file {path}: expected COCO-style 'images', 'annotations' and 'categories' lists")
    return data


def _load(spec: SourceSpec, data_root: Path) -> LoadedSource:
    folder = _folder(spec, data_root)
    files = {split: folder / name for split, name in spec.options["annotations"].items()}
    documents = {split: _read_json(path) for split, path in files.items()}
    try:
        category_ids = sorted({c["id"] for doc in documents.values() for c in doc["categories"]})
        label_of = {cid: i for i, cid in enumerate(category_ids)}
        splits, all_paths, all_labels = {}, [], []
        for split, doc in documents.items():
            category_of = {a["image_id"]: a["category_id"] for a in doc["annotations"]}
            images = sorted(doc["images"], key=lambda image: image["id"])
            paths = [folder / image["file_name"] for image in images]
            labels = [label_of[category_of[image["id"]]] for image in images]
            splits[split] = file_images(paths, labels)
            all_paths += paths
            all_labels += labels
    except (KeyError, TypeError) as exc:
        raise UserError(f"corrupt annotations in {folder}: an image, annotation or category lacks {exc}") from None
    return LoadedSource(splits, f"coco_json:{folder}", listing_digest(all_paths, all_labels, folder))


COCO_JSON = SourceReader(locate=lambda spec, root: f"coco_json:{_folder(spec, root)}", load=_load)
