"""Where aimbench keeps things on disk, named once: the cache root and the file names stages share.

At the bottom floor (standard library only), so every stage (adapters, probes, pre-training,
launch) can import it without importing another stage.
"""

from __future__ import annotations

import os
from pathlib import Path

PRETRAIN_TRUNK = "trunk.safetensors"  # what 'aimbench pretrain' exports into its run folder; what --weights RUN_DIR loads


def cache_dir() -> Path:
    """``$AIMBENCH_CACHE`` or ``~/.cache/aimbench``: downloaded weights (``weights/``), extracted
    features (``features/``) and streamed pre-training data (``stream/``) live under it."""
    return Path(os.environ.get("AIMBENCH_CACHE") or Path.home() / ".cache" / "aimbench")
