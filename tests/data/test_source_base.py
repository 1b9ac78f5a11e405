"""Decoding one listed image: a damaged file is one error naming it, never PIL's traceback."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aimbench.data.source_base import open_image
from aimbench.errors import UserError


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "not a format PIL reads"), (b"hello\n", "not a format PIL reads"), (_png()[:100], "truncated")],
    ids=["zero-byte", "text", "truncated"],
)
def test_a_damaged_image_is_one_error_naming_the_file(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(content)
    with pytest.raises(UserError, match=f"cannot decode image {path} \\(.*{reason}.*\\); replace or remove it"):
        open_image(path)


def test_a_good_image_decodes_whole(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(_png())
    assert open_image(tmp_path / "a.png").size == (20, 20)
