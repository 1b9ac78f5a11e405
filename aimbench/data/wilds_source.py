"""The WILDS releases (iWildCam 2.0, Camelyon17 1.0, RxRx1 1.0, fMoW 1.1) as their archives unpack.

Each release is a metadata CSV plus image folders; the split of every row follows the WILDS
package's ``official`` split scheme (checked against wilds 2.0.0's dataset classes),
re-implemented here so that no WILDS install is needed:

- iwildcam: the ``split`` column (train, val, test, id_val, id_test); images under ``train/``.
- camelyon17: hospital (``center``) 1 is ``val`` and 2 is ``test`` (out-of-distribution);
  the other hospitals' rows are ``train`` (split 0) or ``id_val`` (split 1). No ID test exists.
- rxrx1: the ``dataset`` column; training-experiment rows of site 2 are ``id_test``.
- fmow (``time_after_2016``): rows from 2016 on whose ``split`` is test are the OOD ``test``;
  rows from 2013-2015 whose ``split`` is val are the OOD ``val``; rows before 2013 are
  ``train``/``id_val``/``id_test`` by their ``split``; every other row (other splits in the OOD
  years, ``seq``) is in no split. Images are named by row number, labels index WILDS' fixed list
  of 62 categories.

The shipped cards use only the in-distribution splits (and camelyon17 and rxrx1 carve val from
train where WILDS has no id_val or id_test: see their cards); the OOD splits are read the WILDS
way for cards that want them.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from aimbench.cards.task_card import SourceSpec
from aimbench.data.source_base import LoadedSource, SourceReader, file_images, listing_digest, require_files
from aimbench.errors import UserError

FMOW_CATEGORIES = (
    "airport", "airport_hangar", "airport_terminal", "amusement_park", "aquaculture", "archaeological_site", "barn",
    "border_checkpoint", "burial_site", "car_dealership", "construction_site", "crop_field", "dam", "debris_or_rubble",
    "educational_institution", "electric_substation", "factory_or_powerplant", "fire_station", "flooded_road",
    "fountain", "gas_station", "golf_course", "ground_transportation_station", "helipad", "hospital",
    "impoverished_settlement", "interchange", "lake_or_pond", "lighthouse", "military_facility",
    "multi-unit_residential", "nuclear_powerplant", "office_building", "oil_or_gas_facility", "park",
    "parking_lot_or_garage", "place_of_worship", "police_station", "port", "prison", "race_track", "railway_bridge",
    "recreational_facility", "road_bridge", "runway", "shipyard", "shopping_mall", "single-unit_residential",
    "smokestack", "solar_farm", "space_facility", "stadium", "storage_tank", "surface_mine", "swimming_pool",
    "toll_booth", "tower", "tunnel_opening", "waste_disposal", "water_treatment_facility", "wind_farm", "zoo",
)  # fmt: skip
FMOW_TEST_YEAR, FMOW_VAL_YEAR = 2016, 2013  # the 'official' scheme is time_after_2016, val the 3 years before

Row = dict[str, str]
# a row -> (split name or None if unused, image path relative to the release folder, label)
RowReader = Callable[[int, Row], tuple[str | None, str, int]]


def _iwildcam(_: int, row: Row) -> tuple[str | None, str, int]:
    return row["split"], f"train/{row['filename']}", int(row["y"])


def _camelyon17(_: int, row: Row) -> tuple[str | None, str, int]:
    center = int(row["center"])
    split = {1: "val", 2: "test"}.get(center) or ("train" if int(row["split"]) == 0 else "id_val")
    patient, node, x, y = row["patient"], row["node"], row["x_coord"], row["y_coord"]
    path = f"patches/patient_{patient}_node_{node}/patch_patient_{patient}_node_{node}_x_{x}_y_{y}.png"
    return split, path, int(row["tumor"])


def _rxrx1(_: int, row: Row) -> tuple[str | None, str, int]:
    split = row["dataset"]
    if split == "train" and int(row["site"]) == 2:
        split = "id_test"
    path = f"images/{row['experiment']}/Plate{row['plate']}/{row['well']}_s{row['site']}.png"
    return split, path, int(row["sirna_id"])


def _utc_year(timestamp: str) -> int:
    moment = datetime.fromisoformat(timestamp.strip().replace("Z", "+00:00"))
    return (moment if moment.tzinfo is None else moment.astimezone(timezone.utc)).year


def _fmow(index: int, row: Row) -> tuple[str | None, str, int]:
    split, year = row["split"], _utc_year(row["timestamp"])
    if split == "seq":
        chosen = None
    elif year >= FMOW_TEST_YEAR:
        chosen = "test" if split == "test" else None  # WILDS' OOD val stops before the test years
    elif year >= FMOW_VAL_YEAR:
        chosen = "val" if split == "val" else None
    else:
        chosen = {"train": "train", "val": "id_val", "test": "id_test"}.get(split)
    if row["category"] not in FMOW_CATEGORIES:
        raise ValueError(f"unknown category {row['category']!r}")
    return chosen, f"images/rgb_img_{index}.png", FMOW_CATEGORIES.index(row["category"])


RELEASES: dict[str, tuple[str, RowReader]] = {
    # dataset -> (metadata file, row reader)
    "iwildcam": ("metadata.csv", _iwildcam),
    "camelyon17": ("metadata.csv", _camelyon17),
    "rxrx1": ("metadata.csv", _rxrx1),
    "fmow": ("rgb_metadata.csv", _fmow),
}


def _folder(spec: SourceSpec, data_root: Path) -> Path:
    folder = data_root / spec.options["dir"]
    require_files(folder, [RELEASES[spec.options["dataset"]][0]], "unpack the WILDS archive")
    return folder


def _load(spec: SourceSpec, data_root: Path) -> LoadedSource:
    folder = _folder(spec, data_root)
    metadata, read_row = RELEASES[spec.options["dataset"]]
    rows: dict[str, tuple[list[Path], list[int]]] = {}
    try:
        with (folder / metadata).open(newline="", encoding="utf-8") as handle:
            for index, row in enumerate(csv.DictReader(handle)):
                split, path, label = read_row(index, row)
                if split is not None:
                    paths, labels = rows.setdefault(split, ([], []))
                    paths.append(folder / path)
                    labels.append(label)
    except (KeyError, ValueError, TypeError, csv.Error, UnicodeDecodeError) as exc:
        raise UserError(f"corrupt WILDS metadata {folder / metadata}: cannot read a row ({type(exc).__name__}: {exc})") from None
    splits = {name: file_images(paths, labels) for name, (paths, labels) in rows.items()}
    all_paths = [p for paths, _ in rows.values() for p in paths]
    all_labels = [y for _, labels in rows.values() for y in labels]
    return LoadedSource(splits, f"wilds:{folder}", listing_digest(all_paths, all_labels, folder))


WILDS = SourceReader(locate=lambda spec, root: f"wilds:{_folder(spec, root)}", load=_load)
