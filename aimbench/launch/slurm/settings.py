"""Where Slurm jobs go and what they ask for: a user's config file plus command-line overrides.

Nothing cluster-specific lives in the code. The file (``--slurm-config``, default
``slurm.toml`` in the user's config directory, e.g. ``~/.config/aimbench/slurm.toml``) holds
the cluster's settings once::

    partition = "gpu"
    account = "vision"
    qos = "normal"
    time = "04:00:00"        # or minutes: 240
    gpus_per_node = 1
    cpus_per_task = 8
    mem_gb = 64
    constraint = "a100"
    array_parallelism = 32   # cells of one array running at once
    gpu_memory_gb = 80       # memory of one GPU of the partition: cells that cannot fit are refused
    [gpu_types]              # or: the node features (--constraint) of its GPU kinds and their memory
    v100-32g = 32
    a100-80g = 80
    [sbatch]                 # any other sbatch option, verbatim
    reservation = "cvpr"

and options on the command line override single keys. Unknown keys are errors (a typo would
otherwise silently not apply). The GPU memory keys let backbone cards' resource hints pick the
defaults per cell (``aimbench.launch.slurm.resources``); naming them also makes ``gpus_per_node``
default to 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from aimbench.cards.registry import read_toml
from aimbench.errors import UserError
from aimbench.paths import config_dir

CONFIG_NAME = "slurm.toml"


def default_config_path() -> Path:
    return config_dir() / CONFIG_NAME


def parse_minutes(value: str | int) -> int:
    """``240``, ``"240"``, ``"04:00:00"``, ``"1-00:00:00"`` (Slurm's day-hour form) -> minutes."""
    if isinstance(value, int) and not isinstance(value, bool):
        minutes = value
    else:
        text = str(value).strip()
        match = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{2})(?::(\d{2}))?", text)
        if text.isdigit():
            minutes = int(text)
        elif match:
            days, hours, mins, secs = (int(g) if g else 0 for g in match.groups())
            minutes = days * 1440 + hours * 60 + mins + (1 if secs else 0)
        else:
            raise UserError(f"Slurm time '{value}' is not minutes or [D-]HH:MM[:SS]")
    if minutes < 1:
        raise UserError(f"Slurm time must be at least one minute, got '{value}'")
    return minutes


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class SlurmSettings:
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: int = 240  # minutes
    gpus_per_node: int | None = None  # None: 1 where the file names GPU memory, else 0
    cpus_per_task: int = 4
    mem_gb: float | None = None
    constraint: str | None = None
    array_parallelism: int = 64
    gpu_memory_gb: float | None = None
    gpu_types: dict[str, float] = field(default_factory=dict)  # constraint feature -> GB per GPU
    sbatch: dict[str, str] = field(default_factory=dict)

    @property
    def gpus(self) -> int:
        """GPUs per node (per cell, for eval): as set, else 1 when GPU memory is declared, else 0."""
        if self.gpus_per_node is not None:
            return self.gpus_per_node
        return 1 if self.gpu_memory_gb is not None or self.gpu_types else 0

    @classmethod
    def load(cls, path: Path | None = None, **overrides: Any) -> SlurmSettings:
        """The config file (missing is fine unless it was named explicitly), then non-None ``overrides``."""
        chosen = path or default_config_path()
        settings = cls()
        if chosen.is_file():
            settings = settings._merged(read_toml(chosen), chosen)
        elif path is not None:
            raise UserError(f"--slurm-config {path} does not exist")
        return settings._merged({k: v for k, v in overrides.items() if v is not None}, None)

    def _merged(self, values: dict[str, Any], source: Path | None) -> SlurmSettings:
        where = f"{source}: " if source else ""
        known = {f.name: f.type for f in fields(self)}
        changes: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                raise UserError(f"{where}unknown Slurm setting '{key}'; known: {', '.join(sorted(known))}")
            if key == "time":
                try:
                    value = parse_minutes(value)
                except UserError as exc:
                    raise UserError(f"{where}{exc}") from None
            elif key == "sbatch":
                if not isinstance(value, dict):
                    raise UserError(f"{where}'sbatch' must be a table of sbatch options, got {value!r}")
                value = {**self.sbatch, **{str(k): str(v) for k, v in value.items()}}
            elif key == "gpu_types":
                if not isinstance(value, dict) or not all(_positive(gb) for gb in value.values()):
                    raise UserError(f"{where}'gpu_types' must be a table of node feature = GB per GPU, got {value!r}")
                value = {str(k): float(v) for k, v in value.items()}
            elif known[key].startswith("int") and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise UserError(f"{where}Slurm setting '{key}' must be a whole number >= 0, got {value!r}")
            elif known[key].startswith("float") and not _positive(value):
                raise UserError(f"{where}Slurm setting '{key}' must be a positive number, got {value!r}")
            changes[key] = value
        return replace(self, **changes)

    def executor_parameters(self, nodes: int = 1, tasks_per_node: int = 1) -> dict[str, Any]:
        """``AutoExecutor.update_parameters`` keywords: an eval cell is one task; pre-training one task per GPU."""
        parameters: dict[str, Any] = {
            "timeout_min": self.time,
            "gpus_per_node": self.gpus,
            "cpus_per_task": self.cpus_per_task,
            "tasks_per_node": tasks_per_node,
            "nodes": nodes,
            "slurm_array_parallelism": self.array_parallelism,
            "slurm_additional_parameters": dict(self.sbatch),
        }
        if self.mem_gb is not None:
            parameters["mem_gb"] = self.mem_gb
        for name in ("partition", "account", "qos", "constraint"):
            if getattr(self, name) is not None:
                parameters[f"slurm_{name}"] = getattr(self, name)
        return parameters
