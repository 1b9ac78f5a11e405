"""The real ``aimbench`` command, end to end, as a user runs it (offline, tiny models)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli, write_card

REPO = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")
FAST = ("--epochs", "5", "--protocol", "aim-v1", "--limit", "120")


def records(results: Path) -> list[Path]:
    return sorted((results / "runs").glob("*.json"))


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for fragment in fragments:
        assert fragment in lines[0]


def test_ls_lists_cards_and_filters() -> None:
    proc = run_cli("ls", "backbones", "vit-tiny*")
    assert proc.returncode == 0, proc.stderr
    assert "vit-tiny-cls" in proc.stdout and "vit-tiny-reg" in proc.stdout and "dinov2" not in proc.stdout
    proc = run_cli("ls", "tasks")
    assert "digits" in proc.stdout and "54000/6000/10000" in proc.stdout


def test_ls_protocols_lists_the_recipes() -> None:
    proc = run_cli("ls", "protocols")
    assert proc.returncode == 0, proc.stderr
    assert "aimbench-fast" in proc.stdout
    assert all(
        f"{name} (default: {kind})" in proc.stdout
        for kind, name in (("knn", "aim-v1"), ("attentive", "aim-v2"), ("linear", "dinov2-linear"))
    )
    assert "attentive, linear, knn" in proc.stdout and "--protocol NAME" in proc.stdout


def test_eval_writes_a_complete_record_then_skips_and_overwrites(tmp_path: Path, tiny_cards: Path) -> None:
    results = tmp_path / "results"
    args = ("eval", "-b", "micro-cls", "-t", "digits", "--cards", str(tiny_cards), "--results", str(results), *FAST)
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "micro-cls|digits|linear|0|limit=120|protocol=aim-v1+epochs=5 done" in proc.stdout
    assert "best" in proc.stdout and "last" in proc.stdout
    [path] = records(results)
    record = json.loads(path.read_text())
    assert (record["n_train"], record["n_val"], record["n_test"]) == (120, 120, 120)
    assert record["image_limit"] == 120
    assert [layer["layer"] for layer in record["layers"]] == [0, 1, 2]
    assert len(record["heads"]) == 3 * 3 * 6 * 3  # layer sets x token kinds (patch mean, cls, both) x lrs x wds
    assert record["best_layer"] in (0, 1, 2) and record["last_layer"] == 2
    assert record["weights_id"] == "random-init:seed0" and len(record["weights_sha256"]) == 64
    assert record["dtype"] == "fp32"
    assert record["dataset_revision"].startswith("sha256:")
    assert record["split_policy"]["val"] == "stratified 0.1 of train, seed 0"
    assert record["backbone_info"]["features"] == {
        "source": "block output (residual stream)", "norm_applied": False, "prefix_layout": ["cls"],
    }  # fmt: skip
    env = record["environment"]
    assert env["torch_version"] and env["device"].startswith("cpu") and env["git_sha"]
    assert record["wall_time_s"] > 0 and record["probe_config"]["epochs"] == 5

    again = run_cli(*args)
    assert "skipped: record exists" in again.stdout and records(results) == [path]
    assert json.loads(path.read_text())["record_id"] == record["record_id"]

    rerun = run_cli(*args, "--overwrite")
    assert rerun.returncode == 0 and records(results) == [path]
    assert json.loads(path.read_text())["record_id"] != record["record_id"]

    report = run_cli("report", "--results", str(results), "--format", "csv")
    assert report.returncode == 0, report.stderr
    assert len(report.stdout.strip().splitlines()) == 2  # header + one cell: re-runs never duplicate


@pytest.mark.e2e
def test_report_formats_and_latest_wins_across_configurations(tmp_path: Path, tiny_cards: Path) -> None:
    results = tmp_path / "results"
    common = ("eval", "-t", "digits", "--cards", str(tiny_cards), "--results", str(results), *FAST)
    assert run_cli(*common, "-b", "micro-cls,micro-patches").returncode == 0
    assert run_cli(*common, "-b", "micro-patches", "--layers", "last").returncode == 0  # another layer spec: a row of its own
    card = tiny_cards / "backbones" / "testfam.toml"
    card.write_text(card.read_text().replace("[variants.micro-cls]", '[variants.micro-cls]\ndescription = "corrected"'))
    assert run_cli(*common, "-b", "micro-cls").returncode == 0  # a corrected card: the same cell, a new record
    assert len(records(results)) == 4

    table = run_cli("report", "--results", str(results))
    assert table.returncode == 0, table.stderr
    assert "aimbench leaderboard" in table.stdout and "micro-patches" in table.stdout
    markdown = run_cli("report", "--results", str(results), "--format", "markdown").stdout
    rows = [line for line in markdown.splitlines() if line.startswith("| micro")]
    assert len(rows) == 6  # (micro-cls, micro-patches all, micro-patches last) x (best, last); the older micro-cls record is superseded
    assert all("(L2)" in row for row in rows if "layers last" in row)
    assert "*" in markdown  # --limit runs are marked


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("eval", "-b", "vit-tiny-clz", "-t", "digits"), ("unknown backbone 'vit-tiny-clz'", "did you mean: vit-tiny-cls")),
        (("eval", "-b", "vit-tiny-cls", "-t", "digitz"), ("unknown task 'digitz'", "did you mean: digits")),
        (("eval", "-b", "vit-tiny-cls", "-t", "digits", "--layers", "9"), ("block 9 is outside 0..5",)),
        (("eval", "-b", "vit-tiny-cls", "-t", "digits", "--seed", "x"), ("bad --seed",)),
        (("eval", "-b", "vit-tiny-cls", "-t", "digits", "--weights", "/no/such.safetensors"), ("does not exist",)),
        (("eval", "-b", "dinov2-vits14", "-t", "digits"), ("not available offline", "--weights PATH")),
        (("eval", "-b", "vit-tiny-cls", "-t", "digits", "--dtype", "fp8"), ("unknown dtype 'fp8'",)),
        (
            ("eval", "-b", "vit-tiny-cls", "-t", "digits", "--protocol", "aim-v3"),
            ("unknown protocol 'aim-v3'", "did you mean: aim-v2, aim-v1"),
        ),
        (("report",), ("no run records", "aimbench eval")),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], fragments: tuple[str, ...]) -> None:
    proc = run_cli(*args, "--results", str(tmp_path / "results"))
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "results" / "runs").exists() or not records(tmp_path / "results")


def test_malformed_card_names_file_and_field(tmp_path: Path) -> None:
    text = (REPO / "tasks" / "digits.toml").read_text().replace("version = 1", 'version = "one"')
    card = write_card(tmp_path / "cards", "tasks", "digits", text)
    proc = run_cli("ls", "tasks", "--cards", str(tmp_path / "cards"))
    assert_one_line_error(proc, str(card), "field 'version'", "expected an integer")


def test_missing_dataset_offline_says_how_to_provide_it(tmp_path: Path, tiny_cards: Path) -> None:
    card = (REPO / "tasks" / "fashion-mnist.toml").read_text()
    card = card.replace('fallback_dirs = ["/usr/share/datasets/fashion-mnist"]', "fallback_dirs = []")
    write_card(tiny_cards, "tasks", "fashion-mnist", card)
    proc = run_cli(
        "eval", "-b", "micro-cls", "-t", "fashion-mnist", "--cards", str(tiny_cards),
        "--data-root", str(tmp_path / "data"), "--results", str(tmp_path / "results"),
    )  # fmt: skip
    assert_one_line_error(
        proc,
        "task 'fashion-mnist' has no local copy",
        f"in {tmp_path / 'data' / 'fashion-mnist'}",
        "train-images-idx3-ubyte.gz",
        "apt-get install dataset-fashion-mnist",
        "zalando-datasets/fashion_mnist",
    )
    assert not records(tmp_path / "results")


def test_ctrl_c_during_eval_leaves_no_record(tmp_path: Path, tiny_cards: Path) -> None:
    results = tmp_path / "results"
    script = Path(sys.executable).with_name("aimbench")
    proc = subprocess.Popen(
        [str(script), "eval", "-b", "micro-cls", "-t", "digits", "--cards", str(tiny_cards),
         "--results", str(results), "--epochs", "1000000", "--protocol", "aim-v1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
        # as in a terminal: a suite started in the background ('make test &') hands its children SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert "cell(s)" in proc.stdout.readline()
    time.sleep(8)  # well into feature extraction or probe training (the cell takes hours at this epoch count)
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted: no record written for micro-cls|digits|linear|0" in stderr
    assert "Traceback" not in stderr
    assert not list((results / "runs").glob("*")) if (results / "runs").exists() else True


@pytest.mark.e2e
def test_demo_pretrains_an_aim_and_probes_it_beside_random_backbones(tmp_path: Path) -> None:
    results = tmp_path / "results"
    proc = run_cli("demo", "--results", str(results), "--pretrain-steps", "6")  # the default 240 steps take minutes
    assert proc.returncode == 0, proc.stderr
    assert "pre-training aim-tiny on 1347 digits train images: 6 steps of 64" in proc.stdout
    for backbone in ("vit-tiny-cls", "vit-tiny-reg", "aim-tiny", "aim-tiny-demo"):
        assert f"{backbone}|digits|linear|0|protocol=aim-v1 done" in proc.stdout  # the demo names its cached recipe
        assert f"{backbone} on digits" in proc.stdout
    assert "aimbench leaderboard" in proc.stdout
    by_backbone = {json.loads(p.read_text())["backbone"]: json.loads(p.read_text()) for p in records(results)}
    assert sorted(by_backbone) == ["aim-tiny", "aim-tiny-demo", "vit-tiny-cls", "vit-tiny-reg"]
    trunk = results / "demo" / "pretrain" / "trunk.safetensors"
    assert by_backbone["aim-tiny-demo"]["weights_sha256"] == hashlib.sha256(trunk.read_bytes()).hexdigest()
    assert by_backbone["aim-tiny"]["weights_id"] == "random-init:seed0"
    again = run_cli("demo", "--results", str(results), "--pretrain-steps", "6")  # reuses the run and the records
    assert again.returncode == 0 and "pre-training" not in again.stdout and again.stdout.count("skipped: record exists") == 4
    other = run_cli("demo", "--results", str(results), "--pretrain-steps", "8")
    assert other.returncode == 2 and "pre-trained for 6 steps, not 8; pass --overwrite" in other.stderr


def test_eval_on_real_fashion_mnist(tmp_path: Path, tiny_cards: Path) -> None:
    if not FASHION.is_dir():
        if os.environ.get("CI"):
            pytest.fail("CI must provide Debian's dataset-fashion-mnist (.ci/run installs it)")
        pytest.skip("Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    results = tmp_path / "results"
    proc = run_cli(
        "eval", "-b", "micro-patches", "-t", "fashion-mnist", "--cards", str(tiny_cards),
        "--results", str(results), "--limit", "600", "--epochs", "20", "--protocol", "aim-v1", "--data-root", str(tmp_path / "empty"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    [path] = records(results)
    record = json.loads(path.read_text())
    assert record["dataset_source"] == f"idx:{FASHION}"
    assert (record["n_train"], record["n_val"], record["n_test"]) == (600, 600, 600)
    assert record["best_test_score"] > 0.3  # 10 classes: far above chance even with random features


def test_wheel_ships_the_cards(tmp_path: Path) -> None:
    """``aimbench ls tasks`` works from a wheel installed outside the repository."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(REPO)],
        check=True, capture_output=True,
    )  # fmt: skip
    [wheel] = (tmp_path / "dist").glob("aimbench-*.whl")
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)], check=True, capture_output=True
    )
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import aimbench.cards.registry as r, aimbench.store.db as d; print(r.builtin_cards_root()); print(d.published_dir())"],
        cwd=outside, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.split() == [str(site / "aimbench" / "_cards"), str(site / "aimbench" / "_published")]
    assert (site / "aimbench" / "_published" / "aim_v1.csv").is_file()
    proc = subprocess.run([sys.executable, "-m", "aimbench", "ls", "tasks"], cwd=outside, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "digits" in proc.stdout and "fashion-mnist" in proc.stdout
    protocols = subprocess.run([sys.executable, "-m", "aimbench", "ls", "protocols"], cwd=outside, env=env, capture_output=True, text=True)
    assert protocols.returncode == 0 and "dinov2-linear (default: linear)" in protocols.stdout, protocols.stderr


def test_eval_attentive_linear_and_knn_on_every_layer_set(tmp_path: Path, tiny_cards: Path) -> None:
    """The issue's acceptance command on a tiny backbone: per-layer results for three probe kinds."""
    results = tmp_path / "results"
    args = ("eval", "--backbone", "micro-cls", "--tasks", "digits", "--probe", "attentive,linear,knn",
            "--layers", "all,avg:1-2", "--limit", "60", "--epochs", "2", "--protocol", "aim-v1", "--cards", str(tiny_cards), "--results", str(results))  # fmt: skip
    proc = run_cli(*args, env={"AIMBENCH_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    assert "attentive heads: 4 layer sets in 1 pass(es)" in proc.stdout
    for probe in ("attentive", "linear", "knn"):
        protocol = "" if probe == "knn" else "|protocol=aim-v1+epochs=2"  # kNN trains nothing: --epochs is not in its recipe
        assert f"micro-cls|digits|{probe}|0|limit=60|layers=all,avg:1-2{protocol} done" in proc.stdout
        assert f"{probe} probe, seed 0" in proc.stdout
    by_probe = {json.loads(p.read_text())["probe"]: json.loads(p.read_text()) for p in records(results)}
    assert set(by_probe) == {"attentive", "linear", "knn"}
    for record in by_probe.values():
        assert [layer["layer_set"] for layer in record["layers"]] == ["0", "1", "2", "avg:1-2"]
        assert record["layers"][-1]["blocks"] == [1, 2] and record["last_layer_set"] == "2"
        assert record["metric"] == "top1" and 0 <= record["best_test_score"] <= 1
    assert set(by_probe["knn"]["layers"][0]["hparams"]) == {"k"}
    assert by_probe["attentive"]["probe_config"]["passes"] == 1
    assert by_probe["attentive"]["probe_config"]["augmentation"] == "strong"  # aim-v1's, resolved in the record
    # linear and kNN read the same cached features: one extraction for both
    caches = [by_probe[p]["probe_config"]["feature_cache"] for p in ("linear", "knn")]
    assert sorted(c["extracted_blocks"] for c in caches) == [0, 9] and sorted(c["cached_blocks"] for c in caches) == [0, 9]
    assert not list((results / "state").glob("*")) if (results / "state").exists() else True  # state dropped once recorded


def test_seeds_repeat_cells_and_the_report_shows_their_interval_over_seeds(tmp_path: Path, tiny_cards: Path) -> None:
    results = tmp_path / "results"
    proc = run_cli("eval", "-b", "micro-cls", "-t", "digits", "--probe", "linear", "--seeds", "2", "--limit", "60",
                   "--epochs", "3", "--protocol", "aim-v1", "--cards", str(tiny_cards), "--results", str(results))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(json.loads(p.read_text())["seed"] for p in records(results)) == [0, 1]
    report = run_cli("report", "--results", str(results), "--format", "markdown")
    rows = [line for line in report.stdout.splitlines() if line.startswith("| micro-cls")]
    assert len(rows) == 2 and all(re.search(r"\d+\.\d ±\d+\.\d ×2\*", row) for row in rows), (
        report.stdout
    )  # mean of 2 seeds, with its interval
    assert "×S = mean over S seeds (head init and data order vary, the split does not)" in report.stdout
    assert "its interval resamples seeds and test examples together" in report.stdout
    for seed in ("1", "0"):  # even the default seed, written out, is a second answer to "which seeds"
        both = run_cli("eval", "-b", "micro-cls", "-t", "digits", "--seeds", "2", "--seed", seed, "--results", str(results))
        assert_one_line_error(both, "give one or the other")
    assert_one_line_error(run_cli("eval", "-b", "micro-cls", "-t", "digits", "--seeds", "0", "--results", str(results)), "positive count")


def test_cached_attentive_probe_extracts_token_maps_once(tmp_path: Path, tiny_cards: Path) -> None:
    results, env = tmp_path / "results", {"AIMBENCH_CACHE": str(tmp_path / "cache")}
    args = ("eval", "-b", "micro-cls", "-t", "digits", "--probe", "attentive", "--data-mode", "cached", "--layers", "last,avg:0-1",
            "--limit", "60", "--epochs", "2", "--protocol", "aim-v1", "--cards", str(tiny_cards), "--results", str(results))  # fmt: skip
    proc = run_cli(*args, env=env)
    assert proc.returncode == 0, proc.stderr
    [path] = records(results)
    config = json.loads(path.read_text())["probe_config"]
    assert (config["data_mode"], config["augmentation"]) == ("cached", "none")
    assert config["feature_cache"] == {"cached_blocks": 0, "extracted_blocks": 9, "damaged_blocks": 0}  # blocks 0-2 x train/val/test
    rerun = run_cli(*args, "--overwrite", env=env)
    assert rerun.returncode == 0 and json.loads(path.read_text())["probe_config"]["feature_cache"]["extracted_blocks"] == 0
    bad = run_cli(
        "eval", "-b", "micro-cls", "-t", "digits", "--data-mode", "offline", "--cards", str(tiny_cards), "--results", str(results)
    )
    assert_one_line_error(bad, "data_mode 'offline': expected one of online, cached")


def test_online_linear_probe_through_the_cli(tmp_path: Path, tiny_cards: Path) -> None:
    results = tmp_path / "results"
    proc = run_cli("eval", "-b", "micro-cls", "-t", "digits", "--probe", "linear", "--data-mode", "online", "--limit", "60",
                   "--epochs", "2", "--protocol", "aim-v1", "--cards", str(tiny_cards), "--results", str(results))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    [path] = records(results)
    config = json.loads(path.read_text())["probe_config"]
    assert (config["data_mode"], config["augmentation"]) == ("online", "rrc_flip")
    assert config["features"].startswith("online: pooled block outputs of augmented views")


def test_protocol_task_overrides_and_options_resolve_into_the_record_and_report(tmp_path: Path, tiny_cards: Path) -> None:
    """--protocol picks the card, the task card overrides it, --epochs overrides both; the record
    keeps each value with its source, and 'report cell' shows them."""
    results = tmp_path / "results"
    digits = (REPO / "tasks" / "digits.toml").read_text() + "\n[protocol.linear]\nweight_decays = [0.001]\n"
    write_card(tiny_cards, "tasks", "digits", digits)
    args = ("eval", "-b", "micro-cls", "-t", "digits", "--probe", "linear", "--layers", "last", "--cards", str(tiny_cards),
            "--results", str(results), "--limit", "60", "--epochs", "2")  # fmt: skip
    assert run_cli(*args, "--protocol", "aimbench-fast").returncode == 0
    [path] = records(results)
    record = json.loads(path.read_text())
    assert record["protocol"] == "aimbench-fast+epochs=2"  # the card, and what the command line changed in it
    fields = record["probe_config"]["protocol"]["fields"]
    assert fields["epochs"]["value"] == 2 and fields["epochs"]["from"] == "cli"
    assert fields["weight_decays"] == {"value": [0.001], "source": "task card digits: weight_decays", "from": "task"}
    assert fields["learning_rates"]["value"] == [0.01, 0.03, 0.1] and fields["learning_rates"]["from"] == "protocol"
    assert record["probe_config"]["protocol"]["overridden"] == ["epochs", "val_fraction", "weight_decays"]
    assert [h["hparams"]["weight_decay"] for h in record["heads"]] == [0.001] * len(record["heads"])

    report = run_cli("report", "cell", "micro-cls|digits|linear|0", "--results", str(results))
    assert report.returncode == 0, report.stderr
    assert "aimbench-fast; overridden: epochs (cli), val_fraction (task), weight_decays (task)" in report.stdout
    assert "protocol aimbench-fast as resolved for this cell" in report.stdout
    assert "task card digits: weight_decays" in report.stdout

    assert run_cli(*args, "--protocol", "aim-v1").returncode == 0  # another protocol is another cell configuration: a new record
    assert len(records(results)) == 2


def test_without_protocol_a_linear_probe_trains_with_dinov2s_recipe(tmp_path: Path, tiny_cards: Path) -> None:
    """The linear default is dinov2-linear: SGD heads without weight decay on DINOv2's token kinds,
    online views, each block through the final norm; its key does not name it, aim-v1's does. The
    task card shortens its fixed epochs (1,250 steps of 1,024 views) to a test's size."""
    results = tmp_path / "results"
    digits = (REPO / "tasks" / "digits.toml").read_text() + "\n[protocol.linear]\nepoch_length = 3\nbatch_size = 32\n"
    write_card(tiny_cards, "tasks", "digits", digits)
    args = ("eval", "-b", "micro-cls", "-t", "digits", "--layers", "last", "--cards", str(tiny_cards), "--results", str(results),
            "--limit", "60")  # fmt: skip
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "micro-cls|digits|linear|0|limit=60|layers=last done" in proc.stdout
    [record] = [json.loads(path.read_text()) for path in records(results)]
    assert record["protocol"] == "dinov2-linear"
    config = record["probe_config"]
    fields = {name: field["value"] for name, field in config["protocol"]["fields"].items()}
    assert [fields[f] for f in ("optimizer", "momentum", "feature_norm", "block_norm", "data_mode")] == [
        "sgd",
        0.9,
        "none",
        "final",
        "online",
    ]
    assert {h["token"] for h in record["heads"]} == {"cls", "patch_mean+cls"} and {
        h["hparams"]["weight_decay"] for h in record["heads"]
    } == {0.0}
    assert len(record["heads"]) == 2 * 13  # DINOv2's two token kinds x its 13 learning rates
    assert config["protocol"]["fields"]["epoch_length"] == {"value": 3, "source": "task card digits: epoch_length", "from": "task"}
    assert run_cli(*args, "--protocol", "aim-v1").returncode == 0
    keys = sorted(json.loads(path.read_text())["cell_key"] for path in records(results))
    assert keys == ["micro-cls|digits|linear|0|limit=60|layers=last", "micro-cls|digits|linear|0|limit=60|layers=last|protocol=aim-v1"]
