"""Miniature WILDS releases: the metadata CSV and image files each release's archive unpacks to.

Rows are written so that each requested split gets its images through the real split rule
(hospital numbers for Camelyon17, sites for RxRx1, years for fMoW), plus rows that the rule must
leave out (fMoW's sequestered rows and training rows from OOD years), which also shift fMoW's
row-numbered image names.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from aimbench.cards.task_card import SourceSpec
from aimbench.data.wilds_source import FMOW_CATEGORIES


def _rows_iwildcam(split: str, label: int, k: int, index: int) -> tuple[dict[str, str], str]:
    name = f"{split}_{label}_{k}.jpg"
    return {"split": split, "location_remapped": "3", "filename": name, "y": str(label)}, f"train/{name}"


CAMELYON_CENTER = {"train": (0, 0), "id_val": (3, 1), "val": (1, 0), "test": (2, 0)}  # split -> (center, split column)


def _rows_camelyon17(split: str, label: int, k: int, index: int) -> tuple[dict[str, str], str]:
    center, column = CAMELYON_CENTER[split]
    patient, node, x, y = f"{center * 20 + label:03d}", str(k % 5), str(100 * index), str(7 * k)
    row = {"": str(index), "patient": patient, "node": node, "x_coord": x, "y_coord": y, "tumor": str(label),
           "slide": str(center), "center": str(center), "split": str(column)}  # fmt: skip
    return row, f"patches/patient_{patient}_node_{node}/patch_patient_{patient}_node_{node}_x_{x}_y_{y}.png"


RXRX_DATASET = {"train": ("train", 1), "id_test": ("train", 2), "val": ("val", 1), "test": ("test", 1)}


def _rows_rxrx1(split: str, label: int, k: int, index: int) -> tuple[dict[str, str], str]:
    dataset, site = RXRX_DATASET[split]
    experiment, plate, well = f"HUVEC-{k + 1:02d}", str(label + 1), f"B{index:02d}"
    row = {"site_id": f"{experiment}_{plate}_{well}_{site}", "well_id": f"{experiment}_{plate}_{well}", "cell_type": "HUVEC",
           "dataset": dataset, "experiment": experiment, "plate": plate, "well": well, "site": str(site),
           "well_type": "treatment", "sirna": f"s{label}", "sirna_id": str(label)}  # fmt: skip
    return row, f"images/{experiment}/Plate{plate}/{well}_s{site}.png"


FMOW_YEAR = {"train": ("train", 2010), "id_val": ("val", 2011), "id_test": ("test", 2012), "val": ("val", 2014), "test": ("test", 2016)}


def _rows_fmow(split: str, label: int, k: int, index: int) -> tuple[dict[str, str], str]:
    column, year = FMOW_YEAR[split]
    row = {"split": column, "img_filename": f"x_{index}.jpg", "timestamp": f"{year}-06-0{k % 9 + 1}T10:00:00Z",
           "country_code": "FRA", "category": FMOW_CATEGORIES[label]}  # fmt: skip
    return row, f"images/rgb_img_{index}.png"


def _fmow_left_out(index: int) -> list[dict[str, str]]:
    """Rows in no split: a sequestered one, a training one from an OOD year and a val one from a test
    year (WILDS' OOD val is 2013-2015 only); none of their images exists."""
    return [
        {"split": "seq", "img_filename": "s.jpg", "timestamp": "2011-01-01T00:00:00Z", "country_code": "FRA", "category": "zoo"},
        {"split": "train", "img_filename": "t.jpg", "timestamp": "2017-01-01T00:00:00Z", "country_code": "FRA", "category": "zoo"},
        {"split": "val", "img_filename": "v.jpg", "timestamp": "2016-03-01T00:00:00Z", "country_code": "FRA", "category": "zoo"},
    ]


WRITERS = {
    "iwildcam": ("metadata.csv", _rows_iwildcam),
    "camelyon17": ("metadata.csv", _rows_camelyon17),
    "rxrx1": ("metadata.csv", _rows_rxrx1),
    "fmow": ("rgb_metadata.csv", _rows_fmow),
}


def write_wilds(source: SourceSpec, root: Path, counts: dict[str, int], classes: int, rng: np.random.Generator) -> None:
    from miniature import save_image

    dataset = source.options["dataset"]
    metadata, make_row = WRITERS[dataset]
    folder = root / source.options["dir"]
    rows: list[dict[str, str]] = []
    if dataset == "fmow":
        rows += _fmow_left_out(0)
    for split, count in counts.items():
        for label in range(classes):
            for k in range(count):
                row, image = make_row(split, label, k, len(rows))
                save_image(folder / image, label, rng)
                rows.append(row)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / metadata).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[-1]))
        writer.writeheader()
        writer.writerows(rows)
