"""Cards: TOML descriptions of backbones and tasks, validated into frozen specs."""

from aimbench.cards.backbone_card import BackboneSpec, Preprocess
from aimbench.cards.registry import Registry
from aimbench.cards.task_card import SourceSpec, TaskSpec, ValPolicy

__all__ = ["BackboneSpec", "Preprocess", "Registry", "SourceSpec", "TaskSpec", "ValPolicy"]
