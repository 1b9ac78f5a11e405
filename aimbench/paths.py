"""Where aimbench keeps things on disk, named once: the cache root and the file names stages share.

At the bottom floor (standard library only), so every stage (adapters, probes, pre-training,
launch) can import it without importing another stage.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PRETRAIN_TRUNK = "trunk.safetensors"  # what 'aimbench pretrain' exports into its run folder; what --weights RUN_DIR loads


def cache_dir() -> Path:
    """``$AIMBENCH_CACHE`` or ``~/.cache/aimbench``: downloaded weights (``weights/``), extracted
    features (``features/``) and streamed pre-training data (``stream/``) live under it."""
    return Path(os.environ.get("AIMBENCH_CACHE") or Path.home() / ".cache" / "aimbench")


def config_dir() -> Path:
    """Where user settings live (``slurm.toml``): the platform's convention, as click's ``get_app_dir`` has it:
    ``$XDG_CONFIG_HOME/aimbench`` (default ``~/.config/aimbench``), ``~/Library/Application Support/aimbench``
    on macOS, ``%APPDATA%\\aimbench`` on Windows."""
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA") or Path.home()) / "aimbench"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "aimbench"
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "aimbench"
