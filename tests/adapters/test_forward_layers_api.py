"""``Backbone.forward_layers`` as a user calls it: Python-style block indices, block names, a
dict keyed by block, and PIL images preprocessed with the card's own transform."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from aimbench.adapters import load_backbone
from aimbench.adapters.base import Backbone
from aimbench.errors import UserError

NAMES = ["vit-tiny-cls", "aim-tiny"]  # shipped in backbones/ (random init, 32 px, 6 blocks); two families


@pytest.fixture(scope="module", params=NAMES)
def backbone(request: pytest.FixtureRequest) -> Backbone:
    return load_backbone(request.param)


def _batch(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _pictures(count: int = 2) -> list[Image.Image]:
    """Odd-sized RGB pictures with content, so resize and crop matter."""
    generator = torch.Generator().manual_seed(1)
    return [
        Image.fromarray(torch.randint(0, 256, (40 + 3 * i, 47, 3), generator=generator, dtype=torch.uint8).numpy()) for i in range(count)
    ]


def _same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for block in a:
        assert a[block].layer == b[block].layer == block
        assert torch.equal(a[block].patches, b[block].patches)
        assert (a[block].prefix is None and b[block].prefix is None) or torch.equal(a[block].prefix, b[block].prefix)


def test_negative_indices_give_the_same_tensors_as_positive_ones(backbone: Backbone) -> None:
    x, depth = _batch(), backbone.depth
    _same(backbone.forward_layers(x, [-1, -depth]), backbone.forward_layers(x, [0, depth - 1]))
    _same(backbone.forward_layers(x, -2), backbone.forward_layers(x, depth - 2))


def test_unsorted_and_repeated_blocks_come_back_once_in_ascending_order(backbone: Backbone) -> None:
    x = _batch()
    out = backbone.forward_layers(x, [4, 1, -1, 1, 5, 0])
    assert list(out) == [0, 1, 4, 5]
    _same(out, backbone.forward_layers(x, [0, 1, 4, 5]))
    assert isinstance(out, dict) and out[1].patches.shape[0] == 2 and out[1].patches.shape[2] == backbone.dim


def test_block_names_last_and_all(backbone: Backbone) -> None:
    x, depth = _batch(), backbone.depth
    everything = backbone.forward_layers(x, "all")
    assert list(everything) == list(range(depth))
    last = backbone.forward_layers(x, "last")
    assert list(last) == [depth - 1]
    _same(last, backbone.forward_layers(x, [depth - 1]))
    assert torch.equal(everything[depth - 1].patches, last[depth - 1].patches)
    assert list(backbone.forward_layers(x, ["last", 0, -1])) == [0, depth - 1]


def test_a_pil_image_gives_the_tokens_of_the_backbone_transform(backbone: Backbone) -> None:
    pictures = _pictures()
    transform = backbone.transform()
    tensors = torch.stack([transform(picture) for picture in pictures])
    assert tensors.shape == (2, 3, 32, 32)

    _same(backbone.forward_layers(pictures, [0, -1]), backbone.forward_layers(tensors, [0, -1]))
    one = backbone.forward_layers(pictures[1], "last")
    _same(one, backbone.forward_layers(tensors[1:], [backbone.depth - 1]))
    assert one[backbone.depth - 1].patches.shape[0] == 1
    grey = pictures[0].convert("L")  # any mode is made RGB by the card's transform
    assert backbone.forward_layers(grey, 0)[0].patches.shape == one[backbone.depth - 1].patches.shape


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (6, r"^block 6 out of range for {name} \(depth 6: 0\.\.5 or -6\.\.-1\)$"),
        ([0, -7], r"^block -7 out of range for {name} \(depth 6: 0\.\.5 or -6\.\.-1\)$"),
        ("first", r"^unknown block name 'first' for {name}: use 'last', 'all' or an index in 0\.\.5$"),
        ([], r"^no blocks asked of {name}"),
        ([1.0], r"^block 1\.0 for {name} is not an index"),
    ],
)
def test_bad_blocks_are_user_errors_naming_the_range(backbone: Backbone, layers: object, message: str) -> None:
    with pytest.raises(UserError, match=message.format(name=backbone.spec.name)):
        backbone.forward_layers(_batch(), layers)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "images", [torch.zeros(3, 32, 32), torch.zeros(2, 32, 32, 3), torch.zeros(1, 3, 32, 32, dtype=torch.uint8), [], ["cat.jpg"]]
)
def test_unusable_images_are_user_errors(backbone: Backbone, images: object) -> None:
    with pytest.raises(UserError, match="images must be"):
        backbone.forward_layers(images, "last")  # type: ignore[arg-type]
