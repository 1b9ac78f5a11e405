"""Shared fixtures: offline environment, tiny cards, and a runner for the real CLI."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# downloads and the feature cache of the whole session go to a throw-away folder, never the user's;
# made once, by the first process (workers and spawned ranks inherit it), and removed when that one ends
if "AIMBENCH_CACHE" not in os.environ:
    os.environ["AIMBENCH_CACHE"] = tempfile.mkdtemp(prefix="aimbench-test-cache-")
    atexit.register(shutil.rmtree, os.environ["AIMBENCH_CACHE"], ignore_errors=True)


def micro_card_header(family: str) -> str:
    """The family part of a backbone card for 16 px micro ViTs; variants are appended to it."""
    return f"""
family = "{family}"
adapter = "timm"
license = "Apache-2.0"

[preprocess]
image_size = 16
resize_size = 16
interpolation = "bilinear"
mean = [0.5, 0.5, 0.5]
std = [0.5, 0.5, 0.5]
"""


TINY_BACKBONE_CARD = (
    micro_card_header("testfam")
    + """
[variants.micro-cls]
arch = "vit_tiny_patch16_224"
weights = "random"
model_args = { img_size = 16, patch_size = 4, embed_dim = 32, depth = 3, num_heads = 2 }
depth = 3
dim = 32
heads = 2
cls_token = true

[variants.micro-patches]
arch = "vit_tiny_patch16_224"
weights = "random"
model_args = { img_size = 16, patch_size = 4, embed_dim = 32, depth = 3, num_heads = 2, class_token = false, global_pool = "avg" }
depth = 3
dim = 32
heads = 2
cls_token = false

[variants.micro-patches.resources]  # a card's hint; micro-cls has none and gets the estimate from its size
memory_gb = { fp32 = 0.5 }
"""
)


def write_card(root: Path, kind: str, name: str, text: str) -> Path:
    """Write a card file under ``root/kind/name.toml`` and return it."""
    path = root / kind / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def tiny_cards(tmp_path: Path) -> Path:
    """A user card directory with two micro ViTs (16 px, 3 blocks) for fast tests."""
    root = tmp_path / "cards"
    write_card(root, "backbones", "testfam", TINY_BACKBONE_CARD)
    return root


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that tries to open a network connection."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed ``aimbench`` console script as a user would."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
    script = Path(sys.executable).with_name("aimbench")
    return subprocess.run([str(script), *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout)


def count_forwards(backbone: Any) -> list[tuple[int, list[int]]]:
    """Wrap ``forward_layers`` on a backbone instance; returns the live list of (images, layers) calls."""
    calls: list[tuple[int, list[int]]] = []
    original = backbone.forward_layers

    def counting(images: Any, layers: Any) -> Any:
        calls.append((len(images), list(layers)))
        return original(images, layers)

    backbone.forward_layers = counting
    return calls


@pytest.fixture(scope="session")
def digits_48() -> Any:
    """48 images per split of scikit-learn's digits: a real, offline task for probe training tests."""
    from aimbench.cards.registry import Registry
    from aimbench.data import load_task

    return load_task(Registry.load().task("digits"), limit=48)


@pytest.fixture
def micro_cls(tiny_cards: Path) -> Any:
    """The 16 px, 3-block micro ViT with a cls token (random init), built fresh for each test."""
    from aimbench.adapters import load_backbone
    from aimbench.cards.registry import Registry

    return load_backbone("micro-cls", registry=Registry.load([tiny_cards]))
