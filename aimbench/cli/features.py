"""``aimbench features``: per-layer tokens of a backbone for images, written to a .safetensors file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from aimbench.cards.registry import Registry
from aimbench.cli.eval import WEIGHTS_HELP
from aimbench.cli.options import CardsOption, make_console
from aimbench.devices import require_device
from aimbench.dtypes import DTYPES
from aimbench.errors import UserError, at_least
from aimbench.launch.cells import weights_file
from aimbench.launch.preflight import writable_folder
from aimbench.probes import parse_blocks


def features(
    backbone: Annotated[str, typer.Argument(help="Backbone variant.")],
    images: Annotated[
        Optional[list[Path]],
        typer.Argument(help="Images, folders or .txt lists of paths (as many as you like, e.g. photos/*.jpg).", show_default=False),
    ] = None,
    inputs: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--input", "-i", help="An image, folder or .txt list, like IMAGES (repeatable: -i a.jpg -i b.jpg).", show_default=False
        ),
    ] = None,
    *,  # output is required and has no default: keyword-only, so it can follow the options that have one
    output: Annotated[Path, typer.Option("--output", "-o", help="The .safetensors file to write.")],
    layers: Annotated[str, typer.Option(help="all | last | block indices like 0,5,-1.")] = "all",
    weights: Annotated[Optional[str], typer.Option(help=WEIGHTS_HELP)] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward.")] = 32,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option(help="Backbone precision: fp32 | bf16 | fp16.")] = "fp32",
    cards: CardsOption = None,
) -> None:
    """Write per-layer patch and prefix tokens of a backbone for images, with its own preprocessing.

    Images come as paths after the backbone, with -i (once per path), or both (the -i ones first);
    a folder adds its images (recursively, sorted), a .txt file the paths it lists. The file's
    metadata records the image order.

    [bold]Examples[/bold]

      aimbench features vit-tiny-cls cat.jpg dog.jpg -o tiny.safetensors --layers 0,-1

      aimbench features aim-600m -i photos/ --layers 12,23 -o aim600m.safetensors

      aimbench features dinov2-vits14 -i list.txt --layers all -o dino.safetensors --weights ./dinov2_vits14.pth
    """
    sources = [*(inputs or ()), *(images or ())]
    if not sources:
        raise UserError(
            "no images given: name them after the backbone (aimbench features BACKBONE a.jpg b.jpg -o OUT.safetensors) or with -i"
        )
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}'; one of {', '.join(DTYPES)}")
    if output.suffix != ".safetensors":
        raise UserError(f"--output must end in .safetensors, got '{output}'")
    if output.is_dir():
        raise UserError(f"--output {output} is a folder; name the .safetensors file to write")
    at_least("--batch-size", batch_size, 1)
    registry = Registry.load(cards or ())
    spec = registry.backbone(backbone)
    chosen = parse_blocks(layers, spec.depth)
    weights_file(weights)
    writable_folder(output.parent, "--output", output)
    require_device(device)
    from aimbench.adapters import load_backbone  # imports torch: only once every argument has been checked
    from aimbench.adapters.export import export_features, list_images
    from aimbench.provenance import resolve_device

    paths = list_images(sources)
    model = load_backbone(backbone, weights=weights, registry=registry, dtype=dtype).to(resolve_device(device))
    export_features(model, paths, chosen, output, batch_size)
    make_console().print(f"wrote {output}: {len(paths)} images x {len(chosen)} layers of {backbone} ({model.weights.id})")
