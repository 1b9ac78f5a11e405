"""A full disk during a write: one error line, the previous file intact, no temporary file left.

The cases run on a real, small tmpfs the test mounts (root with CAP_SYS_ADMIN, as in CI); where
mounting is not allowed they are skipped, saying so.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from test_cli import assert_one_line_error

from aimbench.atomic import atomic_write
from aimbench.errors import UserError


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB file system of its own."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or 'mount failed'}); needs root with CAP_SYS_ADMIN")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_write_that_fills_the_disk_keeps_the_previous_file_and_leaves_no_part(small_disk: Path) -> None:
    target = small_disk / "state.bin"
    atomic_write(target, lambda handle: handle.write(b"a" * 64 * 1024))
    with pytest.raises(UserError, match=f"no space left on the device while writing {target} \\(the previous version is kept\\)"):
        atomic_write(target, lambda handle: handle.write(b"b" * 1024 * 1024))
    assert target.read_bytes() == b"a" * 64 * 1024
    assert sorted(p.name for p in small_disk.iterdir()) == ["state.bin"]


def test_pretraining_into_a_full_disk_is_one_error_line(small_disk: Path, tmp_path: Path) -> None:
    from PIL import Image

    images = tmp_path / "images" / "a"
    images.mkdir(parents=True)
    for i in range(8):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(images / f"{i}.png")
    proc = run_cli("pretrain", "aim-tiny", "--data", str(tmp_path / "images"), "--out", str(small_disk / "run"), "--device", "cpu",
                   "--batch-size", "4", "--steps", "2", "--save-every", "1", "--workers", "0")  # fmt: skip
    assert_one_line_error(proc, "no space left on the device while writing", str(small_disk / "run"))
    assert not [p for p in (small_disk / "run").rglob("*") if p.name.endswith(".part")]
