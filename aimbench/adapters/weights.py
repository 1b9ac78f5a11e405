"""Loading weight files without executing code, and hashing what was loaded.

Files load through safetensors or ``torch.load(weights_only=True)``; a checksum from the card is
verified before the file is parsed. Every loaded state dict, random or not, gets a SHA-256 so a
record can say exactly which numbers produced it.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from aimbench.errors import UserError


def state_dict_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """Hash names, dtypes, shapes and bytes of every tensor, in sorted key order."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def verify_checksum(path: Path, actual: str, expected: str | None) -> None:
    """``expected`` may be a full SHA-256 or a published prefix (Apple publishes 8 hex digits)."""
    if expected and not actual.startswith(expected.lower()):
        raise UserError(
            f"checksum mismatch for {path}: expected sha256 {expected}…, got {actual[:16]}…; "
            "the file is corrupt or not the published one, delete it and download again"
        )


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Load a ``.safetensors`` or pickled-tensor file without running any pickled code."""
    if not path.is_file():
        raise UserError(f"weights file '{path}' does not exist")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    # torch's readers surface damage as many types (a truncated zip is an OSError, a text file a KeyError)
    except (SafetensorError, pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError, KeyError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load weights file '{path}': {first_line}") from None
    for key in ("state_dict", "model"):  # common training-checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"weights file '{path}' does not hold a state dict of tensors")
    return state


def load_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load with ``strict=True`` semantics but an error that lists what differs."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            shown = ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
            problems.append(f"{len(items)} {label}: {shown}")
    if problems:
        raise UserError(f"weights '{source}' do not fit the model: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)
