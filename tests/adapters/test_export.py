"""``aimbench features``: per-layer tokens for images, with the backbone's own preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image
from safetensors import safe_open

from aimbench.adapters import load_backbone
from aimbench.adapters.export import export_features, list_images
from aimbench.cards.registry import Registry
from aimbench.errors import UserError


def write_images(folder: Path, count: int = 5) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (20 + i, 24, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), "pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()


def test_export_matches_forward_layers_with_the_backbone_transform(tmp_path: Path, tiny_cards: Path) -> None:
    images = write_images(tmp_path / "imgs")
    backbone = load_backbone("micro-cls", registry=Registry.load([tiny_cards]))
    output = tmp_path / "out" / "features.safetensors"
    export_features(backbone, images, [0, 2], output, batch_size=2)
    tensors, metadata = read(output)
    assert set(tensors) == {"block0.patches", "block0.prefix", "block2.patches", "block2.prefix"}
    assert tensors["block2.patches"].shape == (5, 16, 32) and tensors["block2.prefix"].shape == (5, 1, 32)
    transform = backbone.transform()
    batch = torch.stack([transform(Image.open(p)) for p in images])
    with torch.no_grad():
        expected = backbone.forward_layers(batch, [0, 2])
    assert torch.allclose(tensors["block0.patches"], expected[0].patches, atol=1e-6)
    assert torch.allclose(tensors["block2.prefix"], expected[2].prefix, atol=1e-6)
    assert json.loads(metadata["images"]) == [str(p) for p in images]
    assert json.loads(metadata["layers"]) == [0, 2] and metadata["weights_sha256"] == backbone.weights.sha256
    assert json.loads(metadata["features"])["norm_applied"] is False
    assert not list(output.parent.glob(".*.part"))


def test_list_images_reads_folders_lists_and_files(tmp_path: Path) -> None:
    images = write_images(tmp_path / "imgs", 3)
    (tmp_path / "imgs" / "notes.md").write_text("not an image")
    listing = tmp_path / "list.txt"
    listing.write_text("imgs/img2.png\n\nimgs/img0.png\n")
    assert list_images([tmp_path / "imgs"]) == images
    assert list_images([listing, images[1]]) == [images[2], images[0], images[1]]
    with pytest.raises(UserError, match="does not exist"):
        list_images([tmp_path / "nope"])
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(UserError, match="no images found"):
        list_images([empty])


@pytest.mark.e2e
def test_cli_features_and_its_errors(tmp_path: Path, tiny_cards: Path) -> None:
    write_images(tmp_path / "imgs", 3)
    output = tmp_path / "f.safetensors"
    proc = run_cli(
        "features", "micro-patches", "-i", str(tmp_path / "imgs"), "--layers", "last", "-o", str(output), "--cards", str(tiny_cards)
    )
    assert proc.returncode == 0, proc.stderr
    tensors, _ = read(output)
    assert set(tensors) == {"block2.patches"}  # no prefix tokens in this family

    (tmp_path / "imgs" / "broken.png").write_bytes(b"not a png")
    bad = run_cli(
        "features", "micro-patches", "-i", str(tmp_path / "imgs"), "-o", str(tmp_path / "g.safetensors"), "--cards", str(tiny_cards)
    )
    assert bad.returncode == 2 and "cannot decode image" in bad.stderr and "broken.png" in bad.stderr
    assert not (tmp_path / "g.safetensors").exists() and not list(tmp_path.glob(".g.safetensors.*part"))
    wrong = run_cli("features", "micro-patches", "-i", str(tmp_path / "imgs"), "-o", str(tmp_path / "g.pt"), "--cards", str(tiny_cards))
    assert wrong.returncode == 2 and "must end in .safetensors" in wrong.stderr
