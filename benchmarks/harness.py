"""What every benchmark script shares: its command line basics and the backbone and data it times."""

from __future__ import annotations

import argparse

from aimbench.adapters import load_backbone
from aimbench.adapters.base import Backbone
from aimbench.cards.registry import Registry
from aimbench.cards.task_card import TaskSpec
from aimbench.data import TaskSplits, load_task


def parser(doc: str | None) -> argparse.ArgumentParser:
    """--backbone, --task, --limit and --weights, with the script's docstring as help."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="vit-tiny-cls")
    parser.add_argument("--task", default="digits")
    parser.add_argument("--limit", type=int, default=600)
    parser.add_argument("--weights", default=None, help="override the card's weights, e.g. random to time a full-size architecture offline")
    return parser


def load(args: argparse.Namespace) -> tuple[TaskSpec, TaskSplits, Backbone]:
    registry = Registry.load()
    task = registry.task(args.task)
    return task, load_task(task, limit=args.limit), load_backbone(args.backbone, weights=args.weights, registry=registry)
