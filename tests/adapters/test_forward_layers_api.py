"""``Backbone.forward_layers`` as a user calls it: Python-style block indices, block names, a
mapping by block in the order asked (looked up as asked), PIL images preprocessed with the card's
own transform, and tensors checked against the card's size."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from aimbench.adapters import load_backbone
from aimbench.adapters.base import Backbone, BlockTokens, LayerTokens
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


def _same(a: BlockTokens, b: BlockTokens) -> None:
    assert list(a) == list(b)
    for block in a:
        assert a[block].layer == b[block].layer == block
        assert torch.equal(a[block].patches, b[block].patches)
        first, second = a[block].prefix, b[block].prefix
        assert (first is None and second is None) or (first is not None and second is not None and torch.equal(first, second))


def test_negative_indices_give_the_same_tensors_as_positive_ones(backbone: Backbone) -> None:
    x, depth = _batch(), backbone.depth
    _same(backbone.forward_layers(x, [-1, -depth]), backbone.forward_layers(x, [depth - 1, 0]))
    _same(backbone.forward_layers(x, -2), backbone.forward_layers(x, depth - 2))


def test_unsorted_and_repeated_blocks_come_back_once_in_the_order_asked(backbone: Backbone) -> None:
    x = _batch()
    out = backbone.forward_layers(x, [4, 1, -1, 1, 5, 0])
    assert list(out) == list(out.keys()) == [4, 1, 5, 0] and len(out) == 4  # -1 is 5, asked before the explicit 5
    assert [tokens.layer for tokens in out.values()] == [4, 1, 5, 0]
    ascending = backbone.forward_layers(x, [0, 1, 4, 5])
    assert list(ascending) == [0, 1, 4, 5]
    for block in (0, 1, 4, 5):  # one forward pass whatever the order: the same tensors
        assert torch.equal(out[block].patches, ascending[block].patches)
    assert out[1].patches.shape[0] == 2 and out[1].patches.shape[2] == backbone.dim


def test_blocks_are_looked_up_as_asked(backbone: Backbone) -> None:
    depth = backbone.depth
    out = backbone.forward_layers(_batch(), [-1])
    assert list(out) == [depth - 1] and out[-1].layer == depth - 1  # the layer stays the resolved index
    assert out[-1] is out["last"] is out[depth - 1] and -1 in out and "last" in out and depth - 1 in out
    assert dict(out.items()) == {depth - 1: out[-1]}
    named = backbone.forward_layers(_batch(), ["last", 0])
    assert list(named) == [depth - 1, 0] and named["last"] is named[-1] and named[-depth] is named[0]
    for missing in (1, -2, "all", "first", 1.0, depth):
        assert missing not in out
        with pytest.raises(KeyError, match=rf"was not asked for; this result holds blocks \[{depth - 1}\]"):
            out[missing]  # type: ignore[index]


def test_tokens_print_their_shapes_not_their_values(backbone: Backbone) -> None:
    out = backbone.forward_layers(_batch(), [-1])
    tokens = out[-1]
    prefix = "None" if tokens.prefix is None else f"(2, {tokens.prefix.shape[1]}, {backbone.dim})"
    n = tokens.patches.shape[1]
    assert repr(tokens) == f"LayerTokens(layer=5, patches=(2, {n}, {backbone.dim}) float32 cpu, prefix={prefix})"
    assert repr(out) == f"BlockTokens({{5: {tokens!r}}})"
    made = LayerTokens(3, torch.zeros(2, 196, 384, dtype=torch.bfloat16), torch.zeros(2, 1, 384))
    assert repr(made) == "LayerTokens(layer=3, patches=(2, 196, 384) bfloat16 cpu, prefix=(2, 1, 384))"


def test_block_names_last_and_all(backbone: Backbone) -> None:
    x, depth = _batch(), backbone.depth
    everything = backbone.forward_layers(x, "all")
    assert list(everything) == list(range(depth))
    last = backbone.forward_layers(x, "last")
    assert list(last) == [depth - 1]
    _same(last, backbone.forward_layers(x, [depth - 1]))
    assert torch.equal(everything[depth - 1].patches, last[depth - 1].patches)
    assert list(backbone.forward_layers(x, ["last", 0, -1])) == [depth - 1, 0]
    assert list(backbone.forward_layers(x, [2, "all"])) == [2, *(b for b in range(depth) if b != 2)]


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
    ("images", "given"),
    [
        (torch.zeros(3, 32, 32), "float32 tensor of shape (3, 32, 32)"),
        (torch.zeros(2, 32, 32, 3), "float32 tensor of shape (2, 32, 32, 3)"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "uint8 tensor of shape (1, 3, 32, 32)"),
        (torch.zeros(2, 3, 64, 64), "float32 tensor of shape (2, 3, 64, 64)"),  # timm would assert on the size
        (torch.zeros(2, 3, 32, 48), "float32 tensor of shape (2, 3, 32, 48)"),
        (torch.zeros(2, 1, 32, 32), "float32 tensor of shape (2, 1, 32, 32)"),
    ],
)
def test_a_tensor_not_of_the_cards_size_and_kind_is_one_line_saying_what_to_pass(
    backbone: Backbone, images: torch.Tensor, given: str
) -> None:
    with pytest.raises(UserError) as error:
        backbone.forward_layers(images, "last")
    assert str(error.value) == (
        f"images for {backbone.spec.name} must be a preprocessed float (B, 3, 32, 32) tensor (the card's image_size), got a "
        f"{given}; pass PIL images and the backbone preprocesses them, or prepare tensors with backbone.transform()"
    )
    half = backbone.forward_layers(torch.zeros(1, 3, 32, 32, dtype=torch.float16), "last")  # any float dtype: cast to the model's
    assert half[-1].patches.shape == (1, backbone.patch_tokens(), backbone.dim) and half[-1].patches.dtype == torch.float32


@pytest.mark.parametrize("images", [[], ["cat.jpg"]])
def test_unusable_images_are_user_errors(backbone: Backbone, images: object) -> None:
    with pytest.raises(UserError, match="images must be a \\(B, 3, H, W\\) tensor, a PIL image or a list of them"):
        backbone.forward_layers(images, "last")  # type: ignore[arg-type]
