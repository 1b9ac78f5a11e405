"""The package surface: ``import aimbench`` is light, and its public names are the documented ones."""

from __future__ import annotations

import subprocess
import sys

import aimbench


def test_import_aimbench_does_not_import_torch_until_a_class_is_used() -> None:
    code = (
        "import sys, aimbench\n"
        "assert 'torch' not in sys.modules, 'import aimbench pulled in torch'\n"
        "assert aimbench.list_backbones('vit-tiny-*') and 'torch' not in sys.modules\n"
        "from aimbench import Backbone, LayerTokens\n"
        "assert 'torch' in sys.modules and Backbone.__module__ == 'aimbench.adapters.base'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_public_names() -> None:
    assert set(aimbench.__all__) == {"__version__", "load_backbone", "Backbone", "LayerTokens", "list_backbones", "evaluate", "CellResult"}
    from aimbench.adapters.base import Backbone, LayerTokens
    from aimbench.api import CellResult, evaluate

    assert aimbench.Backbone is Backbone and aimbench.LayerTokens is LayerTokens
    assert aimbench.evaluate is evaluate and aimbench.CellResult is CellResult
    assert set(aimbench.__all__) <= set(dir(aimbench))
    try:
        aimbench.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("unknown names must raise AttributeError")


def test_list_backbones_filters_by_glob_or_substring() -> None:
    names = aimbench.list_backbones()
    assert names == sorted(names) and {"vit-tiny-cls", "aim-tiny", "dinov2-vits14"} <= set(names)
    assert aimbench.list_backbones("vit-tiny-*") == ["vit-tiny-cls", "vit-tiny-reg"]
    assert "aim-tiny" in aimbench.list_backbones("tiny") and aimbench.list_backbones("no-such-*") == []


def test_load_backbone_from_the_package_runs_forward_layers() -> None:
    from PIL import Image

    backbone = aimbench.load_backbone("vit-tiny-cls", weights="random")
    assert isinstance(backbone, aimbench.Backbone)
    out = backbone.forward_layers(Image.new("RGB", (40, 30), "white"), [-1, 0])
    assert list(out) == [backbone.depth - 1, 0] and out[-1] is out[backbone.depth - 1]  # in the order asked, looked up as asked
    assert isinstance(out[0], aimbench.LayerTokens) and out[0].patches.shape == (1, 64, backbone.dim)
