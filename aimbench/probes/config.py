"""Probe hyper-parameters, kept free of torch so planning and the CLI start fast."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LinearProbeConfig:
    learning_rates: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
    weight_decay: float = 1e-4
    epochs: int = 100
    batch_size: int = 256

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "learning_rates": list(self.learning_rates),
            "optimizer": "adamw",
            "schedule": "cosine",
            "feature_norm": "standardised with train mean/std",
            "selection": "val top-1 per layer over token kind x lr",
        }
