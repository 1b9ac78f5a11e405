"""protocols/aim-v2.toml against Table A2 of the AIMv2 paper as printed (tests/fixtures/aimv2_table_a2.toml).

Each column is checked on what a run would train with: the IN-1k column against the attentive
config resolved for the imagenet-1k task card, the Others column against every other shipped task's.
The config is written back in the table's rows and words and compared whole, so any wrong field,
in either column, fails with the row that differs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomllib

from aimbench.cards.protocol_card import FIELDS
from aimbench.cards.registry import Registry
from aimbench.probes.attentive.config import AttentiveProbeConfig
from aimbench.probes.config import scaled_lr
from aimbench.probes.protocol import resolve_config

REPO = Path(__file__).resolve().parents[2]
TABLE = tomllib.loads((REPO / "tests" / "fixtures" / "aimv2_table_a2.toml").read_text())
IMAGENET = "imagenet-1k"  # the IN-1k column; every other task is Others
CROP_SIZE_CARD = "aimv2-l14"  # the crop is the backbone's own eval size: the 224 px AIMv2 cards'


def column(rows: dict[str, Any], name: str) -> dict[str, Any]:
    """The table's rows as they read in one column: a per-column row gives that column's value."""
    return {
        row: value[name] if isinstance(value, dict) and set(value) == set(TABLE["paper"]["columns"])
        else column(value, name) if isinstance(value, dict) and row == "augmentations"
        else value
        for row, value in rows.items()
    }  # fmt: skip


def as_table_a2(config: AttentiveProbeConfig, registry: Registry) -> dict[str, Any]:
    """A resolved attentive config in Table A2's rows and words."""
    described = config.as_dict()
    return {
        "optimizer": {"adamw": "Pytorch's AdamW"}.get(described["optimizer"], described["optimizer"]),
        "optimizer_momentum": {"beta1": config.betas[0], "beta2": config.betas[1]},
        "peak_learning_rate_grid": [scaled_lr(lr, config) for lr in config.learning_rates],  # the peak rates at the batch trained with
        "minimum_learning_rate": config.min_lr,
        "weight_decay": list(config.weight_decays),
        "batch_size": config.batch_size,
        "gradient_clipping": config.grad_clip,
        "warmup_epochs": round(config.warmup_fraction * config.epochs, 9),
        "epochs": config.epochs,
        "learning_rate_schedule": "cosine decay" if "then cosine" in described["schedule"] else described["schedule"],
        "augmentations": {
            "random_resized_crop": {
                "size": f"{registry.backbone(CROP_SIZE_CARD).preprocess.image_size}px",
                "scale": [config.min_crop_scale, 1.0],  # views.train_transform's upper bound
                "ratio": [round(ratio, 2) for ratio in config.crop_ratio],  # printed to two decimals
                "interpolation": config.interpolation.capitalize(),
            },
            "random_horizontal_flip": {"p": config.flip_prob},
            "color_jitter": config.color_jitter,
            "auto_augment": config.rand_augment.removeprefix("timm:"),  # a timm policy string
        },
    }


@pytest.mark.parametrize("name", TABLE["paper"]["columns"])
def test_the_card_is_table_a2_in_both_columns(name: str) -> None:
    registry = Registry.load()
    protocol = registry.protocol("aim-v2")
    tasks = [IMAGENET] if name == "IN-1k" else sorted(set(registry.tasks) - {IMAGENET})
    expected = column(TABLE["rows"], name)
    for task in tasks:
        config = resolve_config(protocol, "attentive", registry.task(task))
        assert isinstance(config, AttentiveProbeConfig)
        assert as_table_a2(config, registry) == expected, task
        # what the table does not list: views with RandAugment (hence online), no random erasing
        assert (config.augmentation, config.data_mode, config.random_erasing) == ("strong", "online", 0.0), task


def test_the_card_cites_the_table() -> None:
    protocol = Registry.load().protocol("aim-v2")
    assert protocol.kinds == ("attentive",) and TABLE["paper"]["arxiv"] in protocol.citation  # the paper has no linear or kNN recipe
    assert set(protocol.task_sections["attentive"]) == {IMAGENET}
    sources = [s.source for s in [*protocol.sections["attentive"].values(), *protocol.for_task("attentive", IMAGENET).values()]]
    assert all("Table A2" in source or source.startswith(("aimbench default", "follows from")) for source in sources)


@pytest.mark.parametrize("task", [IMAGENET, "dtd"])
def test_aim_v2_differs_from_aim_v1_where_the_papers_do(task: str) -> None:
    registry = Registry.load()
    v1, v2 = (resolve_config(registry.protocol(name), "attentive", registry.task(task)) for name in ("aim-v1", "aim-v2"))
    differ = {name for name in FIELDS["attentive"] if getattr(v1, name) != getattr(v2, name)}
    expected = {"learning_rates", "weight_decays", "grad_clip", "random_erasing", "min_lr", "interpolation", "rand_augment", "color_jitter"}
    assert differ == expected | ({"batch_size", "base_batch_size"} if task == IMAGENET else {"warmup_fraction"})
