"""A cell's identity in one place: what makes its number, its readable key, its hash, the name of
its record file, and the columns reports tell cells apart by.

A cell (backbone x task x probe x seed, ``aimbench.launch.cells``) is defined by everything that
can change its number: the content of the backbone and task cards (not their paths), the weights
(a user's file by the SHA-256 of its content), the layer selection, the image limit, the
precision, the protocol and the probe config resolved from it, and the seed; never by where or on
how many ranks it ran. The plan computes a :class:`CellIdentity` once per cell; the launcher hands
it to the run, the store writes its columns into the record, and reports group by them.

The readable key (:attr:`CellIdentity.key`) names the same things a person compares:
``backbone[@weights name]|task|probe|seed`` followed by ``|limit=N``, ``|bf16``,
``|layers=SPEC``, ``|protocol=P`` where they differ from the defaults (the protocol's default is
its probe kind's, :data:`DEFAULT_PROTOCOLS`; a protocol with options that changed its fields reads
``aim-v1+epochs=5``). The hash of the full content names the record
file, so finished cells are found without running anything and a changed card or option never
reuses a stale result.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# What 'aimbench eval' trains each probe kind with unless --protocol names a card: the most completely
# published recipe of each kind (docs/protocols.md says why). Attentive: the AIMv2 paper's Table A2,
# by the AIM authors and for AIM-style backbones; linear: DINOv2's official linear.py, the field's
# most used linear protocol; kNN: DINO's weighted kNN, which the aim-v1 card holds.
DEFAULT_PROTOCOLS = {"attentive": "aim-v2", "linear": "dinov2-linear", "knn": "aim-v1"}
HASH_CHARS = 12  # of the SHA-256 hex digest: the record file's suffix

# What makes a number: two records that differ in any of these are two rows of every report.
IDENTITY_COLUMNS = ("backbone", "weights_key", "task", "probe", "protocol", "layers_spec", "image_limit", "dtype", "seed")
# A leaderboard row: the identity less the task (its columns) and the seed (averaged).
SETUP_COLUMNS = tuple(c for c in IDENTITY_COLUMNS if c not in ("task", "seed"))


def content_hash(content: Mapping[str, Any]) -> str:
    """The hash of everything that defines a cell (JSON with sorted keys; values JSON cannot hold as their text)."""
    blob = json.dumps(content, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:HASH_CHARS]


def default_protocol(probe: str) -> str:
    """The protocol card a probe (a kind, or a released head ``official:last``) is planned with when
    none is named. Released heads train nothing: they read only the val fraction a task without an
    official val split carves from train, and take aim-v1's, which their records were hashed with."""
    return DEFAULT_PROTOCOLS.get(probe.partition(":")[0], "aim-v1")


@dataclass(frozen=True, kw_only=True)
class CellIdentity:
    """What a cell is, as its plan named it: everything here is part of the record's identity."""

    backbone: str
    task: str
    probe: str  # a kind (linear, knn, attentive) or a released head (official:last)
    seed: int
    layers: str  # the layer spec (released heads: the head's name)
    limit: int | None  # images per split, None: the full splits
    dtype: str  # the backbone's precision
    weights_key: str  # "" = the card's weights; random | timm | open_clip:TAG | hub source | sha256:<file content>
    weights_name: str  # what reports call a weights override ("" = the card's)
    protocol: str  # the protocol label (card + explicitly changed fields); "" for released heads, which follow none
    layers_in_key: bool  # the key spells the layer spec out (not the card's default, not a released head)
    config_hash: str  # content_hash of the full content: cards, weights, config, layers, limit, dtype, seed

    @property
    def key(self) -> str:
        backbone = f"{self.backbone}@{self.weights_name}" if self.weights_name else self.backbone
        qualifiers = [f"limit={self.limit}"] if self.limit is not None else []
        qualifiers += [self.dtype] if self.dtype != "fp32" else []
        qualifiers += [f"layers={self.layers}"] if self.layers_in_key else []
        qualifiers += [f"protocol={self.protocol}"] if self.protocol not in ("", default_protocol(self.probe)) else []
        return "|".join([backbone, self.task, self.probe, str(self.seed), *qualifiers])

    @property
    def record_name(self) -> str:
        """The record file's name: readable parts, then the hash that tells configurations apart."""
        return f"{self.backbone}__{self.task}__{self.probe}__seed{self.seed}__{self.config_hash}.json"

    @property
    def stem(self) -> str:
        """The record name without its suffix: what the cell's resume state and progress files are named after."""
        return self.record_name.removesuffix(".json")
