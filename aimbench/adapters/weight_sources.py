"""Where a weights file comes from: a local path, the Hugging Face hub, or a plain URL.

Remote files are fetched once into a cache and read from there afterwards, so a cluster job
never re-downloads and a machine without network can be seeded by copying the cache. The label
of a source goes into every record: hub files carry the commit they came from, URLs the URL.
"""

from __future__ import annotations

import hashlib
import sys
import urllib.error
from pathlib import Path

from aimbench.errors import UserError
from aimbench.paths import PRETRAIN_TRUNK, cache_dir

HF_PREFIX = "hf:"  # hf:<owner>/<repo>/<path in repo>, fetched through the Hugging Face cache
URL_PREFIXES = ("https://", "http://")  # e.g. Microsoft's BEiT releases, fetched into the aimbench cache


def is_remote(source: str) -> bool:
    return source.startswith((HF_PREFIX, *URL_PREFIXES))


def url_cache_path(url: str) -> Path:
    """One folder per URL (query strings such as signed tokens differ per URL), named by the file."""
    name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "weights"
    return cache_dir() / "weights" / hashlib.sha256(url.encode()).hexdigest()[:16] / name


def _url_file(url: str) -> Path:
    from torch.hub import download_url_to_file

    path = url_cache_path(url)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # torch writes to a temporary file and renames it, so an interrupted download leaves nothing
        download_url_to_file(url, str(path), progress=sys.stderr.isatty())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(
            f"cannot download weights {url}: {reason}; download the file on a machine with network access "
            f"and pass --weights PATH, or copy it to {path}"
        ) from None
    return path


def _hub_file(source: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    owner, _, rest = source[len(HF_PREFIX) :].partition("/")
    repo, _, filename = rest.partition("/")
    if not (owner and repo and filename):
        raise UserError(f"bad weights source '{source}': use hf:<owner>/<repo>/<file>")
    try:
        return Path(hf_hub_download(f"{owner}/{repo}", filename))
    except LocalEntryNotFoundError:
        raise UserError(
            f"weights {source} are not in the Hugging Face cache and the hub is offline; download them "
            f"once with network access (unset HF_HUB_OFFLINE), or pass --weights PATH to a local copy"
        ) from None
    except OSError as exc:  # network failures, missing repo or file
        raise UserError(f"cannot download weights {source}: {str(exc).splitlines()[0]}") from None


def _snapshot_commit(path: Path) -> str:
    """The hub commit a cached file came from: the cache stores it as snapshots/<commit>/<file>."""
    parts = path.parts
    return parts[parts.index("snapshots") + 1][:12] if "snapshots" in parts else "unknown"


def resolve_source(source: str, card_dir: Path | None = None) -> Path:
    """The local file of a source; relative paths are relative to ``card_dir``."""
    if source.startswith(HF_PREFIX):
        return _hub_file(source)
    if source.startswith(URL_PREFIXES):
        return _url_file(source)
    path = Path(source).expanduser()
    if card_dir is not None and not path.is_absolute():
        path = card_dir / path
    if path.is_dir() and (path / PRETRAIN_TRUNK).is_file():  # an 'aimbench pretrain' run directory
        path = path / PRETRAIN_TRUNK
    if path.is_dir():
        raise UserError(f"weights '{path}' is a folder without {PRETRAIN_TRUNK}, not a safetensors or PyTorch weights file "
                        "(a pre-training run writes it when it finishes)")  # fmt: skip
    if not path.is_file():
        raise UserError(f"weights file '{path}' does not exist")
    return path


def _looks_like_weights(head: bytes, size: int) -> bool:
    """Whether a file's first bytes open a safetensors file (an 8-byte header length, then a JSON
    object), a ``torch.save`` zip archive, or a legacy ``torch.save`` pickle (protocol 2 to 5)."""
    if head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        return True
    header = int.from_bytes(head[:8], "little") if len(head) >= 9 else 0
    return 2 <= header <= size - 8 and head[8:9] == b"{"


def require_weights_format(path: Path) -> None:
    """Refuse a file that is no weights file at all (a text file, ``/etc/passwd``, an HTML error
    page saved as weights) from its first bytes, before torch or safetensors read it: their
    messages for such files are long and name the wrong thing."""
    with path.open("rb") as handle:
        head = handle.read(16)
    if not _looks_like_weights(head, path.stat().st_size):
        what = "the file is empty" if not head else "not a safetensors or PyTorch (torch.save) weights file"
        raise UserError(f"cannot load weights file '{path}': {what}")


def local_weights_file(source: str, card_dir: Path | None = None) -> Path:
    """The local file a path source names, checked to be a weights file (:func:`require_weights_format`)."""
    path = resolve_source(source, card_dir)
    require_weights_format(path)
    return path


def source_label(source: str, path: Path) -> str:
    """What a record says the weights were: the hub source at its commit, the URL, or the file name."""
    if source.startswith(HF_PREFIX):
        return f"{source}@{_snapshot_commit(path)}"
    if source.startswith(URL_PREFIXES):
        return source.split("?", 1)[0]  # signed query strings are credentials, not identity
    return f"file:{path.name}"
