"""Loading weight files without executing code, and hashing what was loaded.

A weights source is ``random``, a local file (relative to its card when written in a card),
``hf:<owner>/<repo>/<file>`` or an ``https://`` URL (see ``weight_sources``). Files load through
safetensors or ``torch.load(weights_only=True)``; a checksum from the card is verified before the
file is parsed. Every loaded state dict, random or not, gets a SHA-256 so a
record can say exactly which numbers produced it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from aimbench.adapters.base import WeightsInfo
from aimbench.adapters.weight_sources import is_remote, require_weights_format, resolve_source, source_label
from aimbench.cards.backbone_card import BackboneSpec
from aimbench.checksum import CHECKSUM_KEY, content_sha256
from aimbench.errors import UserError
from aimbench.hashing import file_sha256


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


def _torch_load(path: Path) -> object:
    """Memory-mapped where the file format allows it, so tensors are read only when used."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)  # legacy (pre-zip) format


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Load a ``.safetensors`` or pickled-tensor file without running any pickled code."""
    if not path.is_file():
        raise UserError(f"weights file '{path}' does not exist")
    require_weights_format(path)
    state: object  # a pickled file may hold anything: checked below
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
            _verify_checksum(path, state)
        else:
            state = _torch_load(path)
    # torch's readers surface damage as many types (a truncated zip is an OSError, a text file a KeyError)
    except (SafetensorError, pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError, KeyError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load weights file '{path}': {first_line}") from None
    for key in ("state_dict", "model", "module"):  # common training-checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"weights file '{path}' does not hold a state dict of tensors")
    require_finite_weights(path, state)
    return state


def require_finite_weights(path: Path, state: Mapping[str, torch.Tensor]) -> None:
    """Refuse a file with NaN or inf in any floating tensor, naming it: such weights run without an
    error and make every probe score chance, which a record would present as a measurement."""
    for key in sorted(state):
        tensor = state[key]
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            raise UserError(
                f"weights file '{path}': tensor '{key}' holds NaN or inf; these weights measure nothing, use a finite checkpoint"
            )


def _verify_checksum(path: Path, state: dict[str, torch.Tensor]) -> None:
    """A trunk aimbench exported carries its content checksum: a file damaged since is never evaluated."""
    expected = file_metadata(path).get(CHECKSUM_KEY)
    if expected is not None and expected != content_sha256(state):
        raise UserError(f"weights file '{path}' failed its checksum (damaged after it was written); export it again from its run")


def file_metadata(path: Path) -> dict[str, str]:
    """The string metadata of a safetensors file (what an exported trunk says about itself); none for other formats."""
    if path.suffix != ".safetensors":
        return {}
    with safe_open(str(path), "pt") as handle:
        return dict(handle.metadata() or {})


def load_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str, assign: bool = False) -> None:
    """Load with ``strict=True`` semantics but an error that lists what differs.

    ``assign`` replaces the module's tensors by the loaded ones, which is how a model built on the
    meta device gets its weights without ever holding a second copy."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in set(own) & set(state) if state[k].shape != own[k].shape
    )
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            shown = ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
            problems.append(f"{len(items)} {label}: {shown}")
    if problems:
        raise UserError(f"weights '{source}' do not fit the model: " + "; ".join(problems))
    model.load_state_dict(state, strict=True, assign=assign)


def load_source(source: str, card_dir: Path | None = None, sha256: str | None = None) -> tuple[dict[str, torch.Tensor], WeightsInfo, Path]:
    """The state dict of a file or hub source, what it is (id, file sha256) and where it was read."""
    path = resolve_source(source, card_dir)
    digest = file_sha256(path)
    verify_checksum(path, digest, sha256)
    return load_state_dict_file(path), WeightsInfo(source_label(source, path), digest), path


def _is_card_source(spec: BackboneSpec, override: str) -> bool:
    """Whether an override names the card's own weights (so its published checksum applies)."""
    if override == spec.weights:
        return True
    if is_remote(spec.weights) or is_remote(override) or spec.weights in ("random", "timm"):
        return False
    card_file = Path(spec.weights).expanduser()
    card_file = card_file if card_file.is_absolute() else spec.card_path.parent / card_file
    return card_file.resolve() == Path(override).expanduser().resolve()


def drop_unused(state: dict[str, torch.Tensor], patterns: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Remove the tensors a card declares as pre-training only (``drop_keys``: mask tokens,
    tokenizer heads, ...); every other key must still fit the model exactly."""
    return {k: v for k, v in state.items() if not any(fnmatch.fnmatchcase(k, p) for p in patterns)}


def load_weights(spec: BackboneSpec, override: str | None) -> tuple[dict[str, torch.Tensor], WeightsInfo, Path]:
    """A backbone's file, hub or URL weights: the card's own (checksummed) or an override,
    without the card's ``drop_keys``.

    A card's relative path is relative to the card; an override's to the working directory."""
    if override is None:
        state, info, path = load_source(spec.weights, spec.card_path.parent, spec.sha256)
    else:
        state, info, path = load_source(override, None, spec.sha256 if _is_card_source(spec, override) else None)
    return drop_unused(state, spec.drop_keys), info, path
