"""Probes on frozen features: the public surface the launchers and the CLI use.

Planning (the probe kinds and their cost hooks, resolved recipes, which blocks a layer spec reads)
and running (:func:`run_probe` on a :class:`ProbeJob`) are imported from here; each kind's
training code lives in its own folder (``linear/``, ``knn/``, ``attentive/``, ``released/``) over
the shared ``features/`` (extraction, feature cache, layer sets, augmented views), and is this
package's own business. Importing this package does not import torch.
"""

from aimbench.probes.attentive.config import AttentiveProbeConfig
from aimbench.probes.attentive.memory import HEADS_SHARE
from aimbench.probes.config import ProbeConfig, TrainedProbeConfig
from aimbench.probes.features.layer_sets import LayerSet, blocks_needed, parse_blocks, parse_layer_sets
from aimbench.probes.interrupt import Interrupted
from aimbench.probes.job import ProbeJob, ProbeOutcome, StageCallback, no_progress
from aimbench.probes.kinds import OFFICIAL, REGISTRY, CacheNeed, Exchange, PlanShape, ProbeKind, kind_name, probe_kind, run_probe
from aimbench.probes.knn.config import KnnProbeConfig
from aimbench.probes.linear.config import LinearProbeConfig
from aimbench.probes.ownership import Shard, check_world, most_sets_per_rank, row_bounds, set_bounds
from aimbench.probes.protocol import (
    DEFAULT_PROTOCOLS,
    check_overrides,
    default_config,
    default_protocol,
    protocol_label,
    protocol_record,
    resolve_config,
)
from aimbench.probes.results import LayerResult, ProbeResult

__all__ = [
    "DEFAULT_PROTOCOLS",
    "HEADS_SHARE",
    "OFFICIAL",
    "REGISTRY",
    "AttentiveProbeConfig",
    "CacheNeed",
    "Exchange",
    "Interrupted",
    "KnnProbeConfig",
    "LayerResult",
    "LayerSet",
    "LinearProbeConfig",
    "PlanShape",
    "ProbeConfig",
    "ProbeJob",
    "ProbeKind",
    "ProbeOutcome",
    "ProbeResult",
    "Shard",
    "StageCallback",
    "TrainedProbeConfig",
    "blocks_needed",
    "check_overrides",
    "check_world",
    "default_config",
    "default_protocol",
    "kind_name",
    "most_sets_per_rank",
    "no_progress",
    "parse_blocks",
    "parse_layer_sets",
    "probe_kind",
    "protocol_label",
    "protocol_record",
    "resolve_config",
    "row_bounds",
    "run_probe",
    "set_bounds",
]
