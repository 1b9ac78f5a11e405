"""``aimbench.evaluate``: the eval command as a call, returning exactly what the CLI records."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import run_cli
from typer.testing import CliRunner

from aimbench import evaluate
from aimbench.cli import app
from aimbench.errors import UserError
from aimbench.launch.options import RunOptions
from aimbench.launch.request import EvalRequest


def test_evaluate_returns_the_records_the_cli_writes_and_reuses_them(tmp_path: Path, tiny_cards: Path) -> None:
    common: dict[str, Any] = {"limit": 40, "cards": [tiny_cards], "device": "cpu", "cache_dir": tmp_path / "cache"}
    [cell] = evaluate("micro-cls", "digits", "knn", layers="all,last", results=tmp_path / "api", **common)
    written = json.loads(cell.path.read_text(encoding="utf-8"))
    assert cell.record == {k: v for k, v in written.items() if k != "record_sha256"}
    assert cell.best == cell.layers[cell.record["best_layer_set"]] and cell.best.test_score == cell.record["best_test_score"]
    assert set(cell.layers) == {layer["layer_set"] for layer in written["layers"]} and not cell.skipped
    [again] = evaluate("micro-cls", "digits", "knn", layers="all,last", results=tmp_path / "api", **common)
    assert again.skipped and again.record == cell.record

    proc = run_cli("eval", "-b", "micro-cls", "-t", "digits", "--probe", "knn", "--layers", "all,last", "--limit", "40",
                   "--cards", str(tiny_cards), "--device", "cpu", "--results", str(tmp_path / "cli"),
                   env={"AIMBENCH_CACHE": str(tmp_path / "cache")})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    [cli_record] = (tmp_path / "cli" / "runs").glob("*.json")
    assert cli_record.name == cell.path.name  # the same cell, the same identity
    from_cli = json.loads(cli_record.read_text(encoding="utf-8"))
    varying = {"record_id", "created_at", "wall_time_s", "record_sha256", "environment", "timing"}
    assert from_cli["probe_config"].pop("feature_cache")["extracted_blocks"] == 0  # the CLI found the features the call extracted
    written["probe_config"].pop("feature_cache")
    assert {k: v for k, v in from_cli.items() if k not in varying} == {k: v for k, v in written.items() if k not in varying}


def test_seed_names_seeds_and_seeds_counts_them_as_on_the_command_line() -> None:
    def chosen(**given: object) -> tuple[int, ...]:
        return EvalRequest.from_options("micro-cls", "digits", **given).seeds  # type: ignore[arg-type]

    assert chosen() == (0,)
    assert chosen(seed=3) == (3,) and chosen(seeds=3) == (0, 1, 2)  # the API once ran seed 3 for seeds=3
    assert chosen(seed=[2, 0]) == (2, 0) and chosen(seed=(1,)) == (1,) and chosen(seed=" 0, 1,,2 ") == (0, 1, 2)
    for both in ({"seed": 1, "seeds": 2}, {"seed": "0", "seeds": 2}, {"seed": 0, "seeds": 2}):
        with pytest.raises(UserError, match="give one or the other"):
            chosen(**both)
    for count in (0, -1, True, [0, 1], "3"):
        with pytest.raises(UserError, match=r"--seeds N takes a positive count .* --seed 0,1,2$"):
            chosen(seeds=count)
    for seed in ("x", "1.5", 1.5, [1.5], [True], True, object()):
        with pytest.raises(UserError, match="^bad --seed .*: use integers like 0 or 0,1,2$"):
            chosen(seed=seed)


def test_the_factory_reads_names_layers_and_paths_once() -> None:
    request = EvalRequest.from_options(
        " micro-cls,,micro-patches ", ["digits"], "knn, linear", layers=[0, -1, "avg:1-2"], results="out", cards="extra",
        data_root="data", cache_dir="cache", device="cpu", batch_size=8, workers=1, memory_gb=2.5, epochs=2,
    )  # fmt: skip
    assert (request.backbones, request.tasks, request.probes) == (("micro-cls", "micro-patches"), ("digits",), ("knn", "linear"))
    assert request.layers == "0,-1,avg:1-2" and dict(request.overrides) == {"epochs": 2}
    assert request.options == RunOptions(
        results_dir=Path("out"), data_root=Path("data"), card_dirs=(Path("extra"),), device="cpu", batch_size=8, workers=1,
        cache_dir=Path("cache"), memory_gb=2.5,
    )  # fmt: skip
    # a layers string is part of a cell's identity: kept exactly as written
    assert EvalRequest.from_options("a", "b", layers="0, 5").layers == "0, 5"
    assert EvalRequest.from_options("a", "b", cards=["x", Path("y")]).options.card_dirs == (Path("x"), Path("y"))
    with pytest.raises(UserError, match="--layers names no layer set"):
        EvalRequest.from_options("a", "b", layers=[])
    with pytest.raises(UserError, match="--batch-size must be at least 1, got 0"):
        EvalRequest.from_options("a", "b", batch_size=0)


def test_requests_and_run_options_take_keywords_and_parsed_values_only() -> None:
    with pytest.raises(TypeError):
        EvalRequest(("a",), ("b",))  # type: ignore[misc]
    with pytest.raises(TypeError):
        RunOptions(Path("results"))  # type: ignore[misc]
    with pytest.raises(TypeError, match="from_options"):
        EvalRequest(backbones="a,b", tasks=("t",))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="from_options"):
        EvalRequest(backbones=("a",), tasks=("t",), seeds=3)  # type: ignore[arg-type]
    assert EvalRequest(backbones=["a"], tasks=("t",)).backbones == ("a",)  # type: ignore[arg-type]


def test_the_cli_and_the_api_build_the_same_request(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import aimbench.api
    import aimbench.cli.eval

    from_cli: list[EvalRequest] = []
    monkeypatch.setattr(aimbench.cli.eval, "run_request", lambda request, *_: from_cli.append(request))
    args = ["eval", "-b", "micro-cls, micro-patches", "-t", "digits", "--probe", "knn,linear", "--seeds", "2", "--layers", "0,-1",
            "--results", str(tmp_path), "--device", "cpu", "--epochs", "3", "--grid-search", "halving", "--rerun"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output

    from_api: list[EvalRequest] = []

    class Planner:
        def __init__(self, display: object) -> None:
            pass

        def plan(self, request: EvalRequest) -> EvalRequest:
            from_api.append(request)
            return request

        def submit(self, plan: object) -> SimpleNamespace:
            return SimpleNamespace(outcomes=[])

    monkeypatch.setattr(aimbench.api, "LocalLauncher", Planner)
    found = evaluate(["micro-cls", "micro-patches"], "digits", ["knn", "linear"], seeds=2, layers="0,-1", results=tmp_path,
                     device="cpu", epochs=3, grid_search="halving", overwrite=True)  # fmt: skip
    assert found == [] and from_api == from_cli
    assert from_api[0].seeds == (0, 1) and from_api[0].probes == ("knn", "linear")
    evaluate("micro-cls", "digits", seed=3)
    assert from_api[-1].seeds == (3,)


def _tiny_timm(seed: int) -> Any:
    import timm
    import torch

    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=16, patch_size=4, embed_dim=32, depth=3,
                             num_heads=2)  # fmt: skip


def test_an_in_memory_model_is_evaluated_without_a_card_and_identified_by_its_weights(tmp_path: Path, tiny_cards: Path) -> None:
    common: dict[str, Any] = {"tasks": "digits", "probe": "knn", "limit": 40, "cards": [tiny_cards], "device": "cpu",
                              "cache_dir": tmp_path / "cache", "results": tmp_path / "api"}  # fmt: skip
    transform = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}  # the rest from the timm model: 16 px
    [cell] = evaluate(model=_tiny_timm(0), transform=transform, layers="all", **common)
    assert cell.key == "visiontransformer|digits|knn|0|limit=40|layers=all" and not cell.skipped
    record = cell.record
    assert record["weights_id"] == "module:VisionTransformer" and len(record["weights_sha256"]) == 64
    assert record["backbone_info"]["family"] == "module" and len(cell.layers) == 3 and 0 <= cell.best.test_score <= 1
    [again] = evaluate(model=_tiny_timm(0), transform=transform, layers="all", **common)  # the same weights, another object
    assert again.skipped and again.path == cell.path
    [other] = evaluate(model=_tiny_timm(1), transform=transform, layers="all", **common)  # other weights: another cell
    assert not other.skipped and other.path != cell.path and other.key == cell.key
    assert other.record["weights_key"] == f"sha256:{other.record['weights_sha256']}" != record["weights_key"]  # two report rows
    [named] = evaluate("mine", model=_tiny_timm(0), transform=transform, layers="last", **common)
    assert named.key.startswith("mine|digits|knn|0")
    with pytest.raises(UserError, match="brings its own"):
        evaluate(model=_tiny_timm(0), weights="random", **common)
    with pytest.raises(UserError, match="already a card's"):
        evaluate("micro-cls", model=_tiny_timm(0), **common)
    with pytest.raises(UserError, match="transform= is the preprocessing of an in-memory model"):
        evaluate("micro-cls", transform=transform, **common)
