"""Weight sources: URL downloads into the aimbench cache (served by a real local HTTP server),
labels recorded for each kind of source, and clear errors when a download cannot happen."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch
from conftest import micro_card_header, write_card

from aimbench.adapters import load_backbone
from aimbench.adapters.weight_sources import resolve_source, source_label, url_cache_path
from aimbench.cards.registry import Registry
from aimbench.errors import UserError

MICRO_ARGS = dict(img_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=2)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on localhost serving a folder; yields (base URL, folder)."""
    root = tmp_path / "served"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AIMBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _micro_weights(path: Path) -> torch.nn.Module:
    torch.manual_seed(5)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **MICRO_ARGS).eval()
    torch.save(model.state_dict(), path)
    return model


def test_url_is_downloaded_once_into_the_cache(served: tuple[str, Path], cache: Path) -> None:
    base, root = served
    (root / "w.pth").write_bytes(b"weights-bytes")
    url = f"{base}/w.pth?token=secret"
    path = resolve_source(url)
    assert path == url_cache_path(url) and path.is_relative_to(cache) and path.name == "w.pth"
    assert path.read_bytes() == b"weights-bytes"
    assert not list(path.parent.glob("*.partial")) and len(list(path.parent.iterdir())) == 1
    (root / "w.pth").unlink()  # served no more: the cached copy is used
    assert resolve_source(url) == path
    assert source_label(url, path) == f"{base}/w.pth"  # the signed query is not part of the identity


def test_missing_or_unreachable_url_is_one_clear_error(served: tuple[str, Path]) -> None:
    base, _ = served
    with pytest.raises(UserError, match=r"cannot download weights .*/absent\.pth: .*pass --weights PATH, or copy it to "):
        resolve_source(f"{base}/absent.pth")
    assert not url_cache_path(f"{base}/absent.pth").exists()
    with pytest.raises(UserError, match="cannot download weights http://127.0.0.1:9/"):
        resolve_source("http://127.0.0.1:9/x.pth")  # nothing listens on the discard port


def test_card_with_url_weights_loads_and_checks_the_published_checksum(served: tuple[str, Path], tmp_path: Path) -> None:
    base, root = served
    source = _micro_weights(root / "micro.pth")
    digest = hashlib.sha256((root / "micro.pth").read_bytes()).hexdigest()
    card = (
        micro_card_header("urlfam")
        + f"""
[variants.micro-url]
arch = "vit_tiny_patch16_224"
weights = "{base}/micro.pth"
sha256 = "{digest[:8]}"
model_args = {{ img_size = 16, patch_size = 4, embed_dim = 32, depth = 3, num_heads = 2 }}
depth = 3
dim = 32
heads = 2
cls_token = true
"""
    )
    write_card(tmp_path / "cards", "backbones", "urlfam", card)
    registry = Registry.load([tmp_path / "cards"])
    backbone = load_backbone("micro-url", registry=registry)
    assert backbone.weights.id == f"{base}/micro.pth" and backbone.weights.sha256 == digest
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = source.forward_intermediates(x, indices=[2], norm=False, output_fmt="NLC", intermediates_only=True)[0]
    torch.testing.assert_close(backbone.forward_layers(x, [2])[2].patches, expected)

    # a cached file that no longer matches the published checksum is refused
    url_cache_path(f"{base}/micro.pth").write_bytes(b"tampered")
    with pytest.raises(UserError, match="checksum mismatch"):
        load_backbone("micro-url", registry=registry)
