"""The pre-training data pipeline on tiny images written here: --data parsing, each source kind, the
mixture, determinism across processes, workers, restarts and ranks, corrupt images."""

from __future__ import annotations

import io
import tarfile
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aimbench.errors import UserError
from aimbench.pretrain.data import PretrainBatches, batch_loader
from aimbench.pretrain.sources import DataSource, parse_data

SIZE = 16
# mean 0, std 1 and no colour jitter: a pixel comes back as value / 255, so solid-colour images can be
# identified after augmentation (the jitter itself is tested in test_augment.py)
PLAIN = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "color_jitter": 0.0}


def solid(index: int, tag: int, fmt: str = "PNG") -> bytes:
    """A 24x20 solid image whose red channel is its index and blue channel its source's tag."""
    buffer = io.BytesIO()
    Image.new("RGB", (24, 20), (4 * index, 255 - 4 * index, tag)).save(buffer, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    return buffer.getvalue()


def identify(images: torch.Tensor) -> list[tuple[int, int]]:
    """(source tag, index) of each solid image in a batch made with PLAIN normalisation."""
    pixels = (images.mean(dim=(2, 3)) * 255).round().long()
    return [(int(b), round(int(r) / 4)) for r, _, b in pixels.tolist()]


def image_folder(root: Path, count: int, tag: int = 0) -> Path:
    """Nested folders, every accepted extension, and a non-image file that must be ignored."""
    formats = [("a/x", ".png", "PNG"), ("a/y/z", ".JPEG", "PNG"), ("b", ".webp", "WEBP"), ("", ".bmp", "BMP"), ("c", ".jpg", "PNG")]
    for i in range(count):
        sub, suffix, fmt = formats[i % len(formats)]
        (root / sub).mkdir(parents=True, exist_ok=True)
        (root / sub / f"{i:03d}{suffix}").write_bytes(solid(i, tag, fmt))
    (root / "labels.txt").write_text("labels are ignored\n")
    return root


def tar_shards(root: Path, shards: int, per_shard: int, tag: int = 100) -> Path:
    """WebDataset shards ``shards-000.tar`` ... with an image and a label member per sample."""
    root.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        with tarfile.open(root / f"shards-{s:03d}.tar", "w") as archive:
            for j in range(per_shard):
                i = s * per_shard + j
                for name, data in ((f"{i:06d}.jpg", solid(i, tag)), (f"{i:06d}.cls", b"3")):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
    return root


def hf_saved(root: Path, count: int, tag: int = 200) -> Path:
    import datasets

    features = datasets.Features({"label": datasets.Value("int64"), "image": datasets.Image()})
    rows = {"label": list(range(count)), "image": [{"bytes": solid(i, tag), "path": None} for i in range(count)]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(root))
    return root


def batches(sources: list[DataSource], batch_size: int, seed: int = 0, **kwargs: int) -> PretrainBatches:
    return PretrainBatches(sources, SIZE, batch_size, seed, **PLAIN, **kwargs)


def test_parse_data_weights_kinds_and_paths_with_equals_and_at(tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "imgs=v1@home", 3)
    tar_shards(tmp_path / "web", 2, 2)
    hf_saved(tmp_path / "hf", 2)
    sources = parse_data(f"{tmp_path}/web/shards-{{000..001}}.tar=3, {folder}, {tmp_path}/hf@4")  # the issue's = and the @ form
    assert [(s.kind, s.weight) for s in sources] == [("tar", 3 / 8), ("folder", 1 / 8), ("hf", 4 / 8)]
    assert sources[0].location == f"{tmp_path}/web/shards-{{000..001}}.tar" and sources[1].location == str(folder)
    assert [s.kind for s in parse_data(f"{tmp_path}/web,{tmp_path}/web/shards-000.tar,{tmp_path}/web/shards-{{000,001}}.tar")] == [
        "tar"
    ] * 3
    assert parse_data(f"{folder}@0.5")[0] == DataSource(str(folder), 1.0, "folder") == parse_data(f"{folder}=7")[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "--data is empty"),
        ("{imgs},,{imgs}", "item 2 of"),
        ("{tmp}/nowhere", "does not exist"),
        ("{imgs}@abc", "the weight 'abc' is not a number"),
        ("{imgs}=abc", "the weight 'abc' is not a number"),
        ("{imgs}@0", "must be a positive number"),
        ("{imgs}@-1", "must be a positive number"),
        ("{imgs}@nan", "must be a positive number"),
        ("{tmp}/empty", "no image files"),
        ("{tmp}/web/shards-{{000..004}}.tar", "names 5 shard(s), 3 missing, first:"),
        ("{tmp}/notes.zip", "is not a folder, a .tar shard"),
    ],
)
def test_parse_data_errors_are_one_line_user_errors(tmp_path: Path, text: str, message: str) -> None:
    image_folder(tmp_path / "imgs", 2)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.txt").write_text("no images")
    tar_shards(tmp_path / "web", 2, 1)
    (tmp_path / "notes.zip").write_bytes(b"PK")
    with pytest.raises(UserError) as caught:
        parse_data(text.format(tmp=tmp_path, imgs=tmp_path / "imgs"))
    assert message in str(caught.value) and "\n" not in str(caught.value)
    if "exist" in message or "no image" in message:
        assert "e.g. --data" in str(caught.value)  # says how to provide data


@pytest.mark.parametrize("kind", ["folder", "hf", "tar", "hf-parquet"])
def test_each_source_kind_yields_every_image_once_per_epoch_in_a_new_order(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if kind == "folder":
        location, tag = image_folder(tmp_path / "imgs", 10), 0
    elif kind == "hf":
        location, tag = hf_saved(tmp_path / "hf", 10), 200
    elif kind == "tar":
        tar_shards(tmp_path / "web", 3, 4)
        location, tag = tmp_path / "web" / "shards-{000..002}.tar", 100
    else:
        import datasets

        monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")  # load_dataset prepares a cache
        (tmp_path / "pq" / "data").mkdir(parents=True)
        datasets.load_from_disk(str(hf_saved(tmp_path / "hf", 10))).to_parquet(str(tmp_path / "pq" / "data" / "train-0.parquet"))
        location, tag = tmp_path / "pq", 200
    (source,) = parse_data(str(location))
    n = 12 if kind == "tar" else 10
    data = batches([source], n)
    epochs = [identify(data[step][0]) for step in (0, 1)]
    assert all(sorted(epoch) == [(tag, i) for i in range(n)] for epoch in epochs)
    assert epochs[0] != epochs[1]
    assert data[0][1] == 0


def test_mixture_takes_each_source_in_proportion_to_its_weight(tmp_path: Path) -> None:
    sources = parse_data(f"{image_folder(tmp_path / 'a', 8, tag=0)}@5,{image_folder(tmp_path / 'b', 8, tag=50)}@3,"
                         f"{image_folder(tmp_path / 'c', 8, tag=150)}@2")  # fmt: skip
    data = batches(sources, 50)
    counts = Counter(tag for step in range(6) for tag, _ in identify(data[step][0]))
    assert set(counts) == {0, 50, 150}
    for tag, weight in ((0, 0.5), (50, 0.3), (150, 0.2)):
        assert abs(counts[tag] - 300 * weight) <= 2
    per_batch = Counter(tag for tag, _ in identify(data[6][0]))
    assert abs(per_batch[0] - 25) <= 1  # interleaved within every batch, not only on average


def mixed_sources(tmp_path: Path) -> list[DataSource]:
    folder = image_folder(tmp_path / "imgs", 7)
    tar_shards(tmp_path / "web", 2, 3)
    return parse_data(f"{folder}@2,{tmp_path}/web/shards-{{000..001}}.tar@1,{hf_saved(tmp_path / 'hf', 5)}@1")


def test_items_are_pure_functions_of_the_step_in_any_process_worker_or_restart(tmp_path: Path) -> None:
    sources = mixed_sources(tmp_path)
    data = PretrainBatches(sources, SIZE, 6, seed=3)
    direct = [data[step][0] for step in range(6)]
    assert torch.equal(data[4][0], direct[4])
    assert torch.equal(PretrainBatches(sources, SIZE, 6, seed=3)[4][0], direct[4])  # fresh instance, indexes rebuilt
    assert not torch.equal(PretrainBatches(sources, SIZE, 6, seed=4)[4][0], direct[4])
    fresh = PretrainBatches(sources, SIZE, 6, seed=3)
    rng = torch.get_rng_state()
    loaded = [images for images, _ in batch_loader(fresh, 0, 6, workers=2)]
    assert torch.equal(torch.get_rng_state(), rng)  # the trainer's global RNG is not advanced by the loader
    assert all(torch.equal(a, b) for a, b in zip(loaded, direct, strict=True))
    resumed = [images for images, _ in batch_loader(PretrainBatches(sources, SIZE, 6, seed=3), 4, 2, workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(resumed, direct[4:], strict=True))
    assert direct[0].dtype == torch.float32 and direct[0].shape == (6, 3, SIZE, SIZE)


def test_ranks_get_disjoint_images_and_together_the_single_process_batch(tmp_path: Path) -> None:
    (source,) = parse_data(str(image_folder(tmp_path / "imgs", 12)))
    whole = batches([source], 12)[5][0]
    parts = [batches([source], 4, rank=r, world_size=3)[5][0] for r in range(3)]
    seen = [set(identify(part)) for part in parts]
    assert all(len(s) == 4 for s in seen) and len(set.union(*seen)) == 12  # disjoint, and the epoch covered
    assert torch.equal(torch.cat(parts), whole)  # same global stream, augmentation included, for any world size


def test_unreadable_images_are_replaced_deterministically_and_counted(tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "imgs", 6)
    (folder / "garbage.jpg").write_bytes(b"this is not an image" * 10)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    noise.save(buffer, "JPEG", quality=95)
    (folder / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 2 // 3])  # a truncated JPEG
    (source,) = parse_data(str(folder))
    data = batches([source], 8)  # one epoch of 8 files: both bad ones are drawn
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's warnings must not turn into crashes either
        images, skipped = data[0]
    assert skipped in (2, 3)  # 3 when the replacement of one bad image is the other one
    assert {tag for tag, _ in identify(images)} == {0} and set(identify(images)) <= {(0, i) for i in range(6)}
    again, skipped_again = batches([source], 8)[0]
    assert torch.equal(images, again) and skipped_again == skipped


def test_a_source_of_only_unreadable_images_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    for i in range(3):
        (tmp_path / "bad" / f"{i}.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(UserError, match="images in a row are unreadable"):
        batch_loader(batches(parse_data(str(tmp_path / "bad")), 2), 0, 1, workers=0)
