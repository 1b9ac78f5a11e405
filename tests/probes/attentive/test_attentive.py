"""AIM's attentive probe head and released heads evaluated through the real CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from conftest import micro_card_header, run_cli, write_card

from aimbench.cards.registry import Registry
from aimbench.errors import UserError
from aimbench.launch.cells import plan_cells
from aimbench.models.aim import build_aim
from aimbench.probes.attentive.head import AttentivePoolingHead, head_from_state_dict


def released_head(dim: int = 32, classes: int = 10, bias: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    """A head file's tensors in Apple's layout (``head.*``) with non-trivial running statistics."""
    g = torch.Generator().manual_seed(seed)
    state = {
        "head.cls_token": torch.randn(1, 1, dim, generator=g),
        "head.k.weight": torch.randn(dim, dim, generator=g) / dim**0.5,
        "head.v.weight": torch.randn(dim, dim, generator=g) / dim**0.5,
        "head.linear.weight": torch.randn(classes, dim, generator=g),
        "head.bn.running_mean": torch.randn(dim, generator=g),
        "head.bn.running_var": torch.rand(dim, generator=g) + 0.5,
        "head.bn.num_batches_tracked": torch.tensor(100),
    }
    if bias:
        state["head.linear.bias"] = torch.randn(classes, generator=g)
    return state


@pytest.mark.parametrize("bias", [False, True])
def test_head_matches_a_hand_written_computation(bias: bool) -> None:
    state = released_head(bias=bias)
    head = head_from_state_dict(state, heads=2, source="test")
    assert (head.linear.bias is not None) == bias
    x = torch.randn(3, 5, 32)
    s = {k[5:]: v for k, v in state.items()}
    normed = (x - s["bn.running_mean"]) / torch.sqrt(s["bn.running_var"] + 1e-6)
    k = (normed @ s["k.weight"].T).reshape(3, 5, 2, 16).transpose(1, 2)  # (B, heads, N, 16)
    v = (normed @ s["v.weight"].T).reshape(3, 5, 2, 16).transpose(1, 2)
    q = s["cls_token"].reshape(1, 1, 2, 16).transpose(1, 2)  # the query is NOT projected
    attention = torch.softmax(q @ k.transpose(-1, -2) / 16**0.5, dim=-1)
    pooled = (attention @ v).transpose(1, 2).reshape(3, 32)
    expected = pooled @ s["linear.weight"].T + (s["linear.bias"] if bias else 0)
    with torch.no_grad():
        assert torch.allclose(head(x), expected, atol=1e-5)


def test_head_files_are_checked() -> None:
    with pytest.raises(UserError, match="not an attentive-probe head"):
        head_from_state_dict({"head.cls_token": torch.zeros(1, 1, 4)}, heads=1, source="x.pth")
    mixed = {**released_head(), "trunk.blocks.0.norm_1.weight": torch.zeros(32)}
    with pytest.raises(UserError, match="more than a head"):
        head_from_state_dict(mixed, heads=2, source="x.pth")
    with pytest.raises(UserError, match="missing: bn.running_var"):
        head_from_state_dict({k: v for k, v in released_head().items() if k != "head.bn.running_var"}, 2, "x.pth")
    assert AttentivePoolingHead(32, 10, 2).linear.bias is None


def official_card(root: Path, tmp_path: Path, classes: int = 10) -> dict[str, Path]:
    """An aim-micro card with a trunk file and two released heads in Apple's format."""
    torch.manual_seed(1)
    torch.save(build_aim("aim-micro").state_dict(), tmp_path / "trunk.pth")
    files = {}
    for name, seed in (("last", 0), ("best", 1)):
        files[name] = tmp_path / f"head_{name}.pth"
        torch.save(released_head(classes=classes, bias=name == "best", seed=seed), files[name])
    body = f"""
[variants.aim-micro-x]
arch = "aim-micro"
weights = "{tmp_path / "trunk.pth"}"
depth = 3
dim = 32
heads = 2
cls_token = false
[variants.aim-micro-x.official_probes.last]
weights = "{files["last"]}"
sha256 = "{hashlib.sha256(files["last"].read_bytes()).hexdigest()[:8]}"
layers = [1, 2]
[variants.aim-micro-x.official_probes.best]
weights = "{files["best"]}"
layers = [0, 1]
"""
    write_card(root, "backbones", "aimtest", micro_card_header("aimtest").replace('"timm"', '"aim"') + body)
    return files


def test_plan_official_cells(tmp_path: Path) -> None:
    official_card(tmp_path / "cards", tmp_path)
    registry = Registry.load([tmp_path / "cards"])
    cells = plan_cells(registry, ["aim-micro-x"], ["digits"], probe="official")
    assert [(c.probe, c.layers) for c in cells] == [("official:last", "last"), ("official:best", "best")]
    with pytest.raises(UserError, match="no released head 'middle'; it has: last, best"):
        plan_cells(registry, ["aim-micro-x"], ["digits"], probe="official", layers="middle")
    with pytest.raises(UserError, match="has no released probe heads"):
        plan_cells(registry, ["aim-tiny"], ["digits"], probe="official")


def test_cli_evaluates_released_heads_without_training(tmp_path: Path) -> None:
    files = official_card(tmp_path / "cards", tmp_path)
    results = tmp_path / "results"
    proc = run_cli("eval", "-b", "aim-micro-x", "-t", "digits", "--probe", "official", "--limit", "60",
                   "--cards", str(tmp_path / "cards"), "--results", str(results))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    records = {json.loads(p.read_text())["probe"]: json.loads(p.read_text()) for p in (results / "runs").glob("*.json")}
    assert set(records) == {"official:last", "official:best"}
    last = records["official:last"]
    assert last["probe_config"]["head_sha256"] == hashlib.sha256(files["last"].read_bytes()).hexdigest()
    assert last["probe_config"]["window"] == [1, 2] and last["heads"] == []
    assert last["layers"] == [{"layer_set": "last=avg:1-2", "blocks": [1, 2], "layer": 2, "token": "attentive", "hparams": None,
                               "val_score": last["best_val_score"], "test_score": last["best_test_score"], "test_secondary": {},
                               "test_interval": last["best_test_interval"]}]  # fmt: skip
    interval = last["best_test_interval"]  # released heads keep their test predictions too: an interval on their score
    assert interval["low"] <= last["best_test_score"] <= interval["high"] and last["predictions"]["bytes"] > 0
    assert 0.0 <= last["best_test_score"] <= 1.0 and last["metric"] == "top1"
    report = run_cli("report", "--results", str(results), "--format", "markdown")
    assert "official:last" in report.stdout and "official:best" in report.stdout


def test_cli_refuses_a_head_for_another_class_count(tmp_path: Path) -> None:
    official_card(tmp_path / "cards", tmp_path, classes=1000)
    proc = run_cli("eval", "-b", "aim-micro-x", "-t", "digits", "--probe", "official", "--layers", "last",
                   "--limit", "20", "--cards", str(tmp_path / "cards"), "--results", str(tmp_path / "r"))  # fmt: skip
    assert proc.returncode == 2 and "has 1000 classes, task 'digits' has 10" in proc.stderr
