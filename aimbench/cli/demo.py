"""``aimbench demo``: pre-train a tiny AIM on digits, probe it beside random-init backbones, report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aimbench.cli.eval import run_request
from aimbench.cli.options import Cluster, ClusterChoice, ResultsOption, make_console
from aimbench.cli.report import report
from aimbench.launch.request import EvalRequest


def demo(
    results: ResultsOption = Path("results"),
    overwrite: Annotated[bool, typer.Option(help="Pre-train and evaluate again, replacing the demo's run and records.")] = False,
    pretrain_steps: Annotated[int, typer.Option(help="Pre-training steps of the tiny AIM (64 images each).")] = 240,
) -> None:
    """Pre-train a tiny AIM on scikit-learn's digits, probe it layer by layer beside random-init backbones, report; offline.

    The trained trunk becomes the backbone 'aim-tiny-demo' (a card under RESULTS/demo/cards); its
    random-init twin is 'aim-tiny'. A second run reuses everything and only reports.
    """
    from aimbench import demo as demo_run

    console = make_console()
    cards = demo_run.pretrain_demo_aim(results, console, overwrite, pretrain_steps)
    request = EvalRequest.from_options(
        demo_run.BACKBONES, demo_run.TASK, protocol=demo_run.PROTOCOL, overwrite=overwrite, results=results, cards=cards, device="cpu"
    )
    run_request(request, ClusterChoice(Cluster.local, {}), console)
    report(results=results, backbone=",".join(demo_run.BACKBONES), task=demo_run.TASK)
