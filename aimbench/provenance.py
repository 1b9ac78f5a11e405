"""The software and hardware facts recorded with every result."""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from aimbench.devices import parse_device, unavailable
from aimbench.errors import UserError
from aimbench.version import __version__


@functools.lru_cache(maxsize=1)
def git_sha() -> str:
    """The commit of a source checkout (``-dirty`` if tracked files differ), else ``unknown``."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return "unknown"
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "-C", str(root), "diff", "--quiet", "HEAD"], capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha.stdout.strip() + ("-dirty" if dirty.returncode else "")


def resolve_device(name: str) -> torch.device:
    """The torch device of a ``--device`` value, refused in one line when torch cannot use it.

    :func:`aimbench.devices.require_device` already refused what the driver can tell without
    torch; this catches the rest (a CPU-only torch build on a GPU machine, ROCm, library callers)."""
    device = parse_device(name)
    if device.kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.kind == "mps" and not torch.backends.mps.is_available():
        raise UserError(unavailable(device, None) or "--device mps: this torch build cannot use the Apple GPU; use cpu")
    if device.kind == "cuda":
        problem = unavailable(device, torch.cuda.device_count() if torch.cuda.is_available() else 0)
        if problem:
            raise UserError(problem)
    return torch.device(str(device))


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def environment(device: torch.device) -> dict[str, Any]:
    return {
        "aimbench_version": __version__,
        "git_sha": git_sha(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": device_description(device),
    }
