"""Probe kinds: each ``--probe`` value is one object, and this module is the table of them.

A kind says everything the rest of aimbench needs of it: its config class (what a protocol card's
section resolves into; None for released heads, which train nothing), how it runs on a
:class:`~aimbench.probes.job.ProbeJob`, and the planning hooks a cost plan and the disk check
call before anything loads (backbone forwards per image, head FLOPs, the blocks it caches, the
device memory its heads take on one rank, and on several what a rank sends to the layer sets'
owners, ``aimbench.probes.ownership``). Planning code calls the hooks and never asks which kind it holds.

The kinds are registered by name as ``"module:attribute"`` strings (as lm-evaluation-harness
registers its tasks) and imported on first use, so this table imports no kind and no kind imports
it back: adding a kind means its own folder (``aimbench/probes/<kind>/``: ``config.py``,
``kind.py``, ``run.py``) and one line in :data:`REGISTRY`. A trained kind also gets its section
in the protocol card format (``aimbench.cards.protocol_card.FIELDS``) and in the shipped protocol
cards. Kind objects stay free of torch; their ``run`` imports the training code when it runs.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from aimbench.cards.backbone_card import CLS, CONCAT, PATCH_MEAN, column_kinds
from aimbench.errors import unknown_name
from aimbench.probes.config import ProbeConfig
from aimbench.probes.features.layer_sets import LayerSet, blocks_needed
from aimbench.probes.ownership import most_sets_per_rank

if TYPE_CHECKING:
    from aimbench.probes.job import ProbeJob, ProbeOutcome

C = TypeVar("C", bound="ProbeConfig | None")  # the config a kind's hooks read (None for released heads)

OFFICIAL = "official"  # released heads, one cell per head ("official:<head>")
REGISTRY: dict[str, str] = {
    "linear": "aimbench.probes.linear.kind:LINEAR",
    "knn": "aimbench.probes.knn.kind:KNN",
    "attentive": "aimbench.probes.attentive.kind:ATTENTIVE",
    OFFICIAL: "aimbench.probes.released.kind:RELEASED",
}
FLOAT = 4  # bytes of an fp32 value: heads, gradients and optimizer moments are fp32


@dataclass(frozen=True)
class PlanShape:
    """What planning knows of one cell before anything loads, all from the cards: the layer sets it
    reads, the backbone's width, attention heads, patch tokens and probe token kinds, the task's
    classes, and the images per split as the run will see them."""

    layer_sets: Sequence[LayerSet]
    dim: int
    attention_heads: int
    patch_tokens: int
    probe_tokens: tuple[str, ...]  # the card's pooled token kinds (patch_mean, cls, ...)
    classes: int
    sizes: Mapping[str, int]  # train, val, test
    chunk: int = 64  # images per backbone forward (--batch-size): what a forward holds of block outputs
    value_bytes: int = FLOAT  # of the backbone's outputs, in the cell's dtype
    prefix_tokens: int = 0  # cls and registers, before the patch tokens of every block output

    @property
    def evaluated(self) -> int:
        """Images scored after training: val and test."""
        return self.sizes["val"] + self.sizes["test"]

    @property
    def blocks(self) -> list[int]:
        return blocks_needed(self.layer_sets)

    def columns(self, kinds: Sequence[str] | None = None) -> list[str]:
        """The token kinds each layer set's heads read (``kinds``: a protocol's ``token_kinds``), as ``head_inputs`` pairs them."""
        return column_kinds(self.probe_tokens, kinds)

    @property
    def concatenated(self) -> bool:
        """Whether heads also read patch mean and cls concatenated (where both are pooled)."""
        return CONCAT in self.columns()

    @property
    def sources_per_set(self) -> int:
        """Pooled inputs a layer set's heads read: each token kind, and the concatenation where there is one."""
        return len(self.columns())

    @property
    def widest_input(self) -> int:
        """The widest pooled input one head reads: a concatenation is two widths."""
        return self.dim * (2 if self.concatenated else 1)

    def pooled_width(self, kinds: Sequence[str] | None = None) -> int:
        """Every pooled head input's width, summed over layer sets (a concatenation is two widths)."""
        return len(self.layer_sets) * self.dim * sum(2 if kind == CONCAT else 1 for kind in self.columns(kinds))

    def pooled_values(self, kinds: Sequence[str] | None = None) -> int:
        """Pooled values per image that leave the rank that forwarded it, over every layer set: one
        vector per layer set and pooled token kind read (a concatenation is made by the owner from
        the patch mean and the cls it receives, so it moves nothing of its own)."""
        read = set(self.columns(kinds))
        sent = (read - {CONCAT}) | ({PATCH_MEAN, CLS} if CONCAT in read else set())
        return len(self.layer_sets) * len(sent) * self.dim

    def owned(self, world: int) -> PlanShape:
        """This shape narrowed to the layer sets the busiest of ``world`` ranks owns
        (``ownership.most_sets_per_rank``): what sizes one rank's heads. Every layer set costs the
        same in the kinds' estimates, so which ones it owns does not matter."""
        return replace(self, layer_sets=list(self.layer_sets[: most_sets_per_rank(len(self.layer_sets), world)]))


@dataclass(frozen=True)
class CacheNeed:
    """Blocks a cell keeps in the feature cache: pooled vectors, and whole patch-token maps."""

    pooled: frozenset[int] = frozenset()
    tokens: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Exchange:
    """What one rank of a world sends of the block outputs to the ranks that own the layer sets
    (``aimbench.probes.ownership``), float32, and the device memory its sending takes. All zero on
    one rank, and for kinds that train nothing per step."""

    step_bytes: int = 0  # per optimizer step (one global probe batch), while training
    total_bytes: int = 0  # over the whole cell: every exchanged batch (training and scoring) and any features gathered once
    buffer_bytes: int = 0  # device memory a rank holds of a batch beside its heads' estimate at its peak (outgoing outputs, batch tokens)


def sent_bytes(per_image: int, images: int, world: int) -> int:
    """Bytes one of ``world`` ranks sends when the outputs of ``images`` images (``per_image`` bytes
    each, every layer set) go to the layer sets' owners.

    Derivation: the rank forwarded ``images / world`` of the images (``ownership.row_bounds``), and
    for each of them it keeps the layer sets it owns itself (``1 / world`` of them, as
    ``set_bounds`` balances the sets) and sends the rest, so it sends
    ``per_image x images / world x (world - 1) / world``: 0 on one rank, and close to
    ``per_image x images / world`` on many. Rounded up."""
    return -(-per_image * images * (world - 1) // world**2)


def held_bytes(per_image: int, batch: int, world: int) -> int:
    """Device memory the rank's outputs of one batch of ``batch`` images take (every layer set, its
    ``ceil(batch / world)`` rows) while they are sent; none on one rank, where each set's heads read
    the outputs in place (their inputs, in the heads' own estimate)."""
    return 0 if world == 1 else per_image * -(-batch // world)


class ProbeKind(ABC, Generic[C]):
    """One ``--probe`` value: its recipe's config class, how it runs, and what it costs. The hooks
    take the cell's resolved config (None for released heads) and its :class:`PlanShape`."""

    name: ClassVar[str]
    config_class: ClassVar[type[ProbeConfig] | None]  # None: nothing is trained (no protocol section)

    @property
    def trains(self) -> bool:
        return self.config_class is not None

    @abstractmethod
    def run(self, job: ProbeJob) -> ProbeOutcome:
        """Train (or apply) the kind's heads on ``job`` and score them; selection on val only."""

    @abstractmethod
    def forwards(self, config: C, shape: PlanShape) -> int:
        """Backbone forwards of one image over the whole cell (cached splits once, online views each epoch)."""

    @abstractmethod
    def head_flops(self, config: C, shape: PlanShape) -> float:
        """FLOPs of the heads over the whole cell: training steps and scoring val and test."""

    @abstractmethod
    def head_memory_bytes(self, config: C, shape: PlanShape, world: int = 1) -> int:
        """Device memory the heads take while they train on the busiest of ``world`` ranks (all of
        its heads at once): parameters, gradients, optimizer state, activations."""

    def least_head_memory_bytes(self, config: C, shape: PlanShape, world: int = 1) -> int:
        """The least device memory one of ``world`` ranks can train its heads in: all of them at
        once (default), or for a kind that splits them into passes, one pass's smallest part."""
        return self.head_memory_bytes(config, shape, world)

    def passes(self, config: C, shape: PlanShape, budget_bytes: int | None, world: int = 1) -> int:
        """Passes over the data the heads take when each of ``world`` ranks may use ``budget_bytes``
        of device memory (None: no limit); a kind whose heads cannot be split takes one (default)."""
        return 1

    def exchange(self, config: C, shape: PlanShape, world: int) -> Exchange:
        """What one of ``world`` ranks sends to the layer sets' owners (:class:`Exchange`); a kind
        that moves nothing between ranks (default) sends nothing."""
        return Exchange()

    def cache_blocks(self, config: C, shape: PlanShape) -> CacheNeed:
        """What the cell keeps in the feature cache (default: nothing)."""
        return CacheNeed()

    def head_dtype(self, config: C, dtype: str) -> str:
        """The precision the heads compute in, for timing them (default: the backbone's)."""
        return dtype


def kind_name(probe: str) -> str:
    """The kind of a cell's probe label (``official:last`` is kind ``official``)."""
    return probe.partition(":")[0]


@cache
def probe_kind(probe: str) -> ProbeKind[Any]:
    """The kind object of a probe label, imported on first use; an unknown name is one error with close matches."""
    name = kind_name(probe)
    if name not in REGISTRY:
        raise unknown_name("probe", name, list(REGISTRY))
    module, _, attribute = REGISTRY[name].partition(":")
    kind = getattr(importlib.import_module(module), attribute)
    if not isinstance(kind, ProbeKind) or kind.name != name:
        raise TypeError(f"{REGISTRY[name]} is not the ProbeKind '{name}'")
    return kind


def run_probe(probe: str, job: ProbeJob) -> ProbeOutcome:
    """Run the cell's probe ``probe`` (a kind, or ``official:<head>``) on ``job``; selection on val only."""
    return probe_kind(probe).run(job)
