"""Probes on frozen features: the public surface the launchers and the CLI use.

Planning (which probe kinds exist, their resolved recipes, which blocks a layer spec reads) and
running (:func:`run_probe` on a :class:`ProbeJob`) are imported from here; the training code
behind them (``linear``, ``attentive_training``, ``knn``, feature extraction and caching) is this
package's own business. Importing this package does not import torch.
"""

from aimbench.probes.config import AttentiveProbeConfig, KnnProbeConfig, LinearProbeConfig, ProbeConfig
from aimbench.probes.halving import active_share
from aimbench.probes.layer_sets import LayerSet, blocks_needed, parse_blocks, parse_layer_sets
from aimbench.probes.protocol import DEFAULT_PROTOCOL, default_config, protocol_label, protocol_record, resolve_config
from aimbench.probes.results import LayerResult, ProbeResult
from aimbench.probes.run import OFFICIAL, PROBES, ProbeJob, ProbeOutcome, StageCallback, no_progress, probe_kind, run_probe

__all__ = [
    "DEFAULT_PROTOCOL",
    "OFFICIAL",
    "PROBES",
    "AttentiveProbeConfig",
    "KnnProbeConfig",
    "LayerResult",
    "LayerSet",
    "LinearProbeConfig",
    "ProbeConfig",
    "ProbeJob",
    "ProbeOutcome",
    "ProbeResult",
    "StageCallback",
    "active_share",
    "blocks_needed",
    "default_config",
    "no_progress",
    "parse_blocks",
    "parse_layer_sets",
    "probe_kind",
    "protocol_label",
    "protocol_record",
    "resolve_config",
    "run_probe",
]
