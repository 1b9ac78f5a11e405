"""Cards: TOML descriptions of backbones, tasks and protocols (probe recipes), validated into frozen specs."""

from aimbench.cards.backbone_card import BackboneSpec, Preprocess
from aimbench.cards.protocol_card import ProtocolSpec
from aimbench.cards.registry import Registry
from aimbench.cards.task_card import SourceSpec, TaskSpec, ValPolicy

__all__ = ["BackboneSpec", "Preprocess", "ProtocolSpec", "Registry", "SourceSpec", "TaskSpec", "ValPolicy"]
