"""Slurm settings: the user's file, command-line overrides, and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from aimbench.cli.options import sbatch_pairs
from aimbench.errors import UserError
from aimbench.launch.slurm.settings import SlurmSettings, parse_minutes


@pytest.mark.parametrize(
    ("text", "minutes"), [(90, 90), ("90", 90), ("04:00:00", 240), ("1-02:30:00", 1590), ("00:01:30", 2), ("12:30", 750)]
)
def test_time_limits_read_as_slurm_writes_them(text: str | int, minutes: int) -> None:
    assert parse_minutes(text) == minutes


def test_the_file_sets_the_cluster_and_the_command_line_overrides_single_keys(tmp_path: Path) -> None:
    config = tmp_path / "slurm.toml"
    config.write_text('partition = "gpu"\naccount = "vision"\ntime = "12:00:00"\ngpus_per_node = 1\n[sbatch]\nreservation = "cvpr"\n')
    settings = SlurmSettings.load(config, partition="debug", mem_gb=64.0, qos=None, sbatch={"exclusive": "user"})
    assert (settings.partition, settings.account, settings.time, settings.gpus_per_node) == ("debug", "vision", 720, 1)
    parameters = settings.executor_parameters()
    assert parameters["slurm_partition"] == "debug" and parameters["slurm_account"] == "vision" and parameters["mem_gb"] == 64.0
    assert parameters["slurm_additional_parameters"] == {"reservation": "cvpr", "exclusive": "user"}
    assert parameters["timeout_min"] == 720 and "slurm_qos" not in parameters


def test_a_missing_default_file_is_fine_but_a_named_one_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "nothing-here"))
    assert SlurmSettings.load() == SlurmSettings()
    with pytest.raises(UserError, match="does not exist"):
        SlurmSettings.load(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('partiton = "gpu"', "unknown Slurm setting 'partiton'; known: account,"),
        ("gpus_per_node = 1.5", "'gpus_per_node' must be a whole number"),
        ('time = "soon"', "Slurm time 'soon' is not minutes"),
        ('sbatch = "--exclusive"', "'sbatch' must be a table"),
        ("gpu_memory_gb = 0", "'gpu_memory_gb' must be a positive number"),
        ('mem_gb = "lots"', "'mem_gb' must be a positive number"),
        ('gpu_types = { a100 = "80G" }', "'gpu_types' must be a table of node feature = GB per GPU"),
    ],
)
def test_bad_settings_name_the_file_and_the_key(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "slurm.toml"
    config.write_text(content + "\n")
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        SlurmSettings.load(config)


def test_gpu_memory_in_the_file_makes_one_gpu_per_cell_the_default(tmp_path: Path) -> None:
    config = tmp_path / "slurm.toml"
    config.write_text("[gpu_types]\na100-80g = 80\nv100-32g = 32\n")
    settings = SlurmSettings.load(config)
    assert settings.gpu_types == {"a100-80g": 80.0, "v100-32g": 32.0} and settings.executor_parameters()["gpus_per_node"] == 1
    assert SlurmSettings.load(config, gpus_per_node=4).executor_parameters()["gpus_per_node"] == 4
    assert SlurmSettings().executor_parameters()["gpus_per_node"] == 0


def test_sbatch_options_are_key_value_pairs() -> None:
    assert sbatch_pairs(["reservation=cvpr", "exclusive = user"]) == {"reservation": "cvpr", "exclusive": "user"}
    assert sbatch_pairs(None) is None
    with pytest.raises(UserError, match="not KEY=VALUE"):
        sbatch_pairs(["--exclusive"])
