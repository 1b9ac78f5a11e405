"""Sources that are image files on disk: class folders, and list files naming each image.

``imagefolder`` is ``<dir>/<split>/<class>/<image>`` (ImageNet's train/ and val/ by WordNet id);
classes are the sorted folder names over all splits, torchvision's and timm's convention. Hidden
entries (``.ipynb_checkpoints``, ``.DS_Store``, a sync tool's ``.trash``) are neither splits,
classes nor images: a stray one would otherwise become a class with one or two images and shift
every label after it. A link that loops, and a FIFO, socket or device among the images, are one
error naming it (one would stop the listing with a traceback, the other hang the decoder).
``list`` covers the official releases that ship one text file per split (DTD's
``labels/train1.txt``, Food-101's ``meta/train.txt``, Oxford-IIIT Pets' ``annotations/test.txt``,
DomainNet's ``infograph_train.txt``); the card says how a line names its image and label.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from aimbench.cards.task_card import SourceSpec
from aimbench.data.source_base import (
    LoadedSource,
    SourceReader,
    SourceUnavailable,
    file_images,
    listing_digest,
    read_text_lines,
    require_files,
)
from aimbench.errors import UserError
from aimbench.special_files import special_kind

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"})


def _visible(folder: Path, kind: Literal["folders", "files"]) -> list[str]:
    """Sorted names of the folders (or files) in ``folder`` that are not hidden."""
    names = []
    for entry in os.scandir(folder):
        if entry.name.startswith("."):
            continue
        try:
            is_dir = entry.is_dir()
            special = None if is_dir or entry.is_file() else special_kind(entry.stat().st_mode)  # stat only the rare others
        except FileNotFoundError:  # a dangling link: no image there, as before
            continue
        except OSError as exc:  # a link that loops (ELOOP), an unreadable entry
            raise UserError(f"{entry.path}: {exc.strerror or exc}; remove or fix it") from None
        if special is not None:
            raise UserError(f"{entry.path} is {special}, not an image or a folder; remove it from the data folder")
        if is_dir == (kind == "folders"):
            names.append(entry.name)
    return sorted(names)


def _folder(spec: SourceSpec, data_root: Path) -> Path:
    folder = data_root / spec.options["dir"]
    if not folder.is_dir() or not _visible(folder, "folders"):
        raise SourceUnavailable(f"put one folder per split, each with one folder per class, in {folder}")
    return folder


def _load_imagefolder(spec: SourceSpec, data_root: Path) -> LoadedSource:
    folder = _folder(spec, data_root)
    split_dirs = _visible(folder, "folders")
    classes = sorted({name for split in split_dirs for name in _visible(folder / split, "folders")})
    index = {name: i for i, name in enumerate(classes)}
    splits, all_paths, all_labels = {}, [], []
    for split in split_dirs:
        paths, labels = [], []
        for class_dir in _visible(folder / split, "folders"):
            for name in _visible(folder / split / class_dir, "files"):
                if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                    paths.append(folder / split / class_dir / name)
                    labels.append(index[class_dir])
        splits[split] = file_images(paths, labels)
        all_paths += paths
        all_labels += labels
    return LoadedSource(splits, f"imagefolder:{folder}", listing_digest(all_paths, all_labels, folder))


IMAGEFOLDER = SourceReader(locate=lambda spec, root: f"imagefolder:{_folder(spec, root)}", load=_load_imagefolder)


def _list_folder(spec: SourceSpec, data_root: Path) -> Path:
    folder = data_root / spec.options["dir"]
    needed = [*spec.options["lists"].values(), *([spec.options["classes_file"]] if spec.options["classes_file"] else [])]
    require_files(folder, needed, "unpack the official release")
    return folder


def _line_image_and_label(line: str, spec: SourceSpec, classes: dict[str, int], where: str) -> tuple[str, int]:
    fields = line.split()
    try:
        image = spec.options["image"].format(*fields)
        label_field = spec.options["label_field"]
        if label_field is None:
            return image, classes[fields[0].split("/", 1)[0]]
        return image, int(fields[label_field]) - (spec.options["label_base"] or 0)
    except (IndexError, KeyError, ValueError):
        raise UserError(f"corrupt data file {where}: cannot read an image and a label from the line {line!r}") from None


def _class_index(spec: SourceSpec, folder: Path, lines: dict[str, list[str]]) -> dict[str, int]:
    """Class name -> label for layouts whose label is the image's folder."""
    if spec.options["classes_file"]:
        names = read_text_lines(folder / spec.options["classes_file"])
    else:
        names = sorted({line.split()[0].split("/", 1)[0] for split_lines in lines.values() for line in split_lines})
    return {name: i for i, name in enumerate(names)}


def _load_list(spec: SourceSpec, data_root: Path) -> LoadedSource:
    folder = _list_folder(spec, data_root)
    lines = {split: read_text_lines(folder / name) for split, name in spec.options["lists"].items()}
    classes = _class_index(spec, folder, lines) if spec.options["label_field"] is None else {}
    splits, all_paths, all_labels = {}, [], []
    for split, split_lines in lines.items():
        where = str(folder / spec.options["lists"][split])
        pairs = [_line_image_and_label(line, spec, classes, where) for line in split_lines]
        paths = [folder / image for image, _ in pairs]
        labels = [label for _, label in pairs]
        splits[split] = file_images(paths, labels)
        all_paths += paths
        all_labels += labels
    return LoadedSource(splits, f"list:{folder}", listing_digest(all_paths, all_labels, folder))


LIST = SourceReader(locate=lambda spec, root: f"list:{_list_folder(spec, root)}", load=_load_list)
