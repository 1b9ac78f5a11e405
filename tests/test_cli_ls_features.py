"""Three things a new user hit: ``pretrain --help`` names exactly the presets it accepts, ``features``
takes several images after one ``-i`` (or as plain paths), and ``ls`` fits the terminal it prints to."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image
from rich.console import Console
from safetensors import safe_open
from typer.testing import CliRunner

from aimbench.cards.registry import Registry
from aimbench.cli import app
from aimbench.cli.ls import LEFT_OUT_FIRST, WRAPPING, ListKind, fit_width
from aimbench.cli.pretrain import PRESET_HELP
from aimbench.errors import UserError
from aimbench.report.listing import backbone_listing, protocol_listing, task_listing

# -- pretrain presets ------------------------------------------------------------------------------------------------


def test_pretrain_help_lists_exactly_the_presets_it_accepts() -> None:
    from aimbench.models.aim import PRESETS
    from aimbench.pretrain.request import PretrainRequest

    assert " | ".join(PRESETS) in PRESET_HELP  # from the torch-free models.presets, so the CLI starts without torch
    for preset in PRESETS:
        assert PretrainRequest(preset, "images/").config().preset == preset  # every listed preset is known
    result = CliRunner().invoke(app, ["pretrain", "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    assert result.exit_code == 0 and " | ".join(PRESETS) in result.output


def test_the_cli_still_starts_without_torch() -> None:
    code = "import sys, aimbench.cli; assert 'torch' not in sys.modules, 'aimbench.cli imported torch'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_aim_micro_pretrains_through_the_cli(tmp_path: Path) -> None:
    _images(tmp_path / "imgs", 8, size=(20, 20))
    out = tmp_path / "run"
    proc = run_cli("pretrain", "aim-micro", "--data", str(tmp_path / "imgs"), "--steps", "2", "--batch-size", "4", "--workers", "0",
                   "--device", "cpu", "--dtype", "fp32", "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (out / "trunk.safetensors").is_file()


# -- features: several images --------------------------------------------------------------------------------------


def _images(folder: Path, count: int, size: tuple[int, int] = (24, 20)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(count):
        path = folder / f"im{i}.png"
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _features(tmp_path: Path, cards: Path, *args: str) -> tuple[int, object, list[str]]:
    """Run ``aimbench features micro-cls ARGS`` in-process; (exit code, exception, the images the file lists)."""
    output = tmp_path / f"f{len(list(tmp_path.glob('*.safetensors')))}.safetensors"
    result = CliRunner().invoke(app, ["features", "micro-cls", *args, "-o", str(output), "--cards", str(cards), "--device", "cpu"])
    if result.exit_code != 0:
        return result.exit_code, result.exception, []
    with safe_open(str(output), "pt") as handle:
        return 0, None, json.loads(handle.metadata()["images"])


def test_features_takes_several_images_after_one_input_flag_or_as_paths(tmp_path: Path, tiny_cards: Path) -> None:
    a, b, c = (str(p) for p in _images(tmp_path / "imgs", 3))
    assert _features(tmp_path, tiny_cards, "-i", a, b, c)[::2] == (0, [a, b, c])  # the timm/DINOv2 user's habit
    assert _features(tmp_path, tiny_cards, a, b)[::2] == (0, [a, b])  # plain paths after the backbone
    assert _features(tmp_path, tiny_cards, "-i", a, "-i", c)[::2] == (0, [a, c])  # repeated -i
    assert _features(tmp_path, tiny_cards, "-i", str(tmp_path / "imgs"))[::2] == (0, [a, b, c])  # a folder
    code, error, _ = _features(tmp_path, tiny_cards)
    assert code != 0 and isinstance(error, UserError) and "no images given" in str(error)


# -- ls: the terminal's width -----------------------------------------------------------------------------------------


def _render(kind: ListKind, width: int) -> tuple[str, list[str]]:
    registry = Registry.load()
    table = {
        ListKind.backbones: backbone_listing(registry),
        ListKind.tasks: task_listing(registry, data_root=Path("/nonexistent")),
        ListKind.protocols: protocol_listing(registry),
    }[kind]
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(fit_width(table, width, WRAPPING[kind], LEFT_OUT_FIRST[kind]))
    return console.file.getvalue(), [row[0] for row in table.rows]  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", list(ListKind))
@pytest.mark.parametrize("width", [80, 100, 140])
def test_listings_fit_the_width_and_never_cut_a_name(kind: ListKind, width: int) -> None:
    text, names = _render(kind, width)
    assert max(len(line) for line in text.splitlines()) <= width
    first_cells = [line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│")]
    assert set(names) <= set(first_cells), set(names) - set(first_cells)  # whole, on one line, never cut to '…'


def test_a_narrow_terminal_leaves_columns_out_and_says_which() -> None:
    narrow, _ = _render(ListKind.backbones, 80)
    assert "left out to fit 80 columns: licence" in narrow and "Apache-2.0" not in narrow
    wide, _ = _render(ListKind.backbones, 200)
    assert "left out" not in wide and "Apache-2.0" in wide and "hf:apple/AIM/aim_7b_5bimgs_attnprobe_backbone.pth" in wide


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_ls_in_a_terminal_fits_its_width_and_piped_is_wide(tmp_path: Path) -> None:
    import fcntl
    import pty
    import struct
    import termios

    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env |= {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "NO_COLOR": "1", "TERM": "xterm"}
    script = str(Path(sys.executable).with_name("aimbench"))
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 90, 0, 0))  # 40 rows, 90 columns
    proc = subprocess.Popen([script, "ls", "backbones"], stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=60) == 0
    lines = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode()).replace("\r", "").splitlines()
    assert lines and max(len(line) for line in lines) <= 90
    names = {line.split("│")[1].strip() for line in lines if line.startswith("│")}
    assert {"dinov2-vitg14-reg-518", "beitv2-vitl16-pt1k", "vit-tiny-cls"} <= names

    piped = run_cli("ls", "backbones")
    assert piped.returncode == 0 and max(len(line) for line in piped.stdout.splitlines()) > 150
    assert "licence" in piped.stdout and "left out" not in piped.stdout
