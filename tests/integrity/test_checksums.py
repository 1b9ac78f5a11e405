"""Files aimbench wrote and reads back, damaged after they were written, through the real CLI:
never used, a warning or one error line, and the number never changes silently."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import run_cli
from test_cli import assert_one_line_error, records


def _eval(tiny_cards: Path, results: Path, cache: Path, *extra: str):  # type: ignore[no-untyped-def]
    return run_cli(
        "eval", "-b", "micro-cls", "-t", "digits", "--cards", str(tiny_cards), "--results", str(results),
        "--limit", "120", "--epochs", "3", "--protocol", "aim-v1", *extra, env={"AIMBENCH_CACHE": str(cache)},
    )  # fmt: skip


def test_damaged_cached_features_are_extracted_again_and_the_score_is_unchanged(tmp_path: Path, tiny_cards: Path) -> None:
    results, cache = tmp_path / "results", tmp_path / "cache"
    first = _eval(tiny_cards, results, cache)
    assert first.returncode == 0, first.stderr
    [path] = records(results)
    clean = json.loads(path.read_text())
    blocks = sorted(cache.rglob("block*.safetensors"))
    for block in blocks[:2]:  # random bytes over the values of one block, a zeroed region of another: both still parse
        data = bytearray(block.read_bytes())
        data[-600:-100] = np.random.default_rng(0).bytes(500) if block == blocks[0] else bytes(500)
        block.write_bytes(bytes(data))
    again = _eval(tiny_cards, results, cache, "--overwrite")
    assert again.returncode == 0, again.stderr
    warnings = [line for line in again.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) >= 1 and all("failed their checksum" in line for line in warnings)
    redone = json.loads(path.read_text())
    assert redone["probe_config"]["feature_cache"]["damaged_blocks"] == 2
    assert redone["best_test_score"] == clean["best_test_score"]
    assert [layer["test_score"] for layer in redone["layers"]] == [layer["test_score"] for layer in clean["layers"]]


def test_a_record_changed_by_hand_is_left_out_of_the_report_and_its_cell_runs_again(tmp_path: Path, tiny_cards: Path) -> None:
    results, cache = tmp_path / "results", tmp_path / "cache"
    assert _eval(tiny_cards, results, cache).returncode == 0
    [path] = records(results)
    text = path.read_text()
    score = json.loads(text)["best_test_score"]
    path.write_text(text.replace(f'"best_test_score": {score}', '"best_test_score": 0.999'))  # still valid JSON
    report = run_cli("report", "--results", str(results))
    assert "failed its checksum" in report.stderr and "0.999" not in report.stdout and "99.9" not in report.stdout
    cell = run_cli("report", "cell", "micro-cls|digits|linear|0|limit=120|protocol=aim-v1+epochs=3", "--results", str(results))
    assert cell.returncode == 2 and "Traceback" not in cell.stderr
    rerun = _eval(tiny_cards, results, cache)  # no --overwrite: the damaged record does not count as done
    assert rerun.returncode == 0 and "failed its checksum" in rerun.stderr and "done" in rerun.stdout
    assert json.loads(path.read_text())["best_test_score"] == score


def test_a_flipped_bit_in_a_pretraining_checkpoint_stops_the_resume_in_one_line(tmp_path: Path) -> None:
    from PIL import Image

    images = tmp_path / "images" / "a"
    images.mkdir(parents=True)
    for i in range(8):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(images / f"{i}.png")
    run = tmp_path / "run"
    args = ("pretrain", "aim-micro", "--data", str(tmp_path / "images"), "--out", str(run), "--device", "cpu",
            "--batch-size", "4", "--steps", "4", "--save-every", "2")  # fmt: skip
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    checkpoint = run / "checkpoint.pt"
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0x10
    checkpoint.write_bytes(bytes(data))
    resumed = run_cli(*args, "--resume")
    assert_one_line_error(resumed, str(checkpoint))
    assert checkpoint.read_bytes() == bytes(data)  # left as it was found
