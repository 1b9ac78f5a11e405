"""``aimbench eval --cluster slurm`` against a real Slurm cluster (``.ci/start-slurm.sh`` on localhost).

Skipped where no cluster answers, except under CI, where ``.ci/run`` starts one and a missing
cluster is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli

pytestmark = pytest.mark.e2e  # a real cluster: submissions, requeues and polling take minutes


def _cluster_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h", "-o", "%a"], capture_output=True, text=True, timeout=20).stdout.strip().startswith("up")
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.fixture(scope="module")
def slurm() -> None:
    if not _cluster_up():
        if os.environ.get("CI"):
            pytest.fail("CI must run a Slurm cluster (.ci/run starts one with .ci/start-slurm.sh)")
        pytest.skip("no Slurm cluster answers here (start one: sudo bash .ci/start-slurm.sh)")


EVAL = ("eval", "-b", "micro-cls,micro-patches", "-t", "digits", "--limit", "60", "--epochs", "2", "--protocol", "aim-v1", "--cluster", "slurm",
        "--cpus-per-task", "1", "--time", "10")  # fmt: skip


def _records(results: Path) -> list[Path]:
    return sorted((results / "runs").glob("*.json")) if (results / "runs").is_dir() else []


def test_an_eval_array_finishes_on_slurm_and_a_second_submission_skips_it(slurm: None, tmp_path: Path, tiny_cards: Path) -> None:
    results = tmp_path / "results"
    dry = run_cli(*EVAL, "--cards", str(tiny_cards), "--results", str(results), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    # the card's memory hint (micro-patches) and the size estimate (micro-cls) differ: one array each
    assert "2 cell(s) to submit in 2 array(s), 0 skipped" in dry.stdout and "dry run: nothing submitted" in dry.stdout
    assert not (results / "jobs").exists()
    proc = run_cli(*EVAL, "--cards", str(tiny_cards), "--results", str(results))
    assert proc.returncode == 0, proc.stderr
    [state_file] = (results / "jobs").glob("*.json")
    state = json.loads(state_file.read_text())
    assert [c["key"] for c in state["cells"]] == [
        f"{b}|digits|linear|0|limit=60|protocol=aim-v1+epochs=2" for b in ("micro-cls", "micro-patches")
    ]
    assert all(c["job_id"] and c["stdout"].endswith(".out") for c in state["cells"])
    # backbone (1.1 GB estimated, 0.5 GB card hint) + heads (0.1 GB) + 4 GB runtime, in whole GB, on a CPU-only cluster
    assert [c["resources"]["mem_gb"] for c in state["cells"]] == [6, 5]
    assert len({c["job_id"].split("_")[0] for c in state["cells"]}) == 2
    deadline = time.monotonic() + 240
    while len(_records(results)) < 2 and time.monotonic() < deadline:
        time.sleep(2)
    names = [path.name for path in _records(results)]
    assert names == sorted(c["record"] for c in state["cells"]), [Path(c["stderr"]).read_text()[-2000:] for c in state["cells"]]
    local = tmp_path / "local"  # the same cells run here give the same numbers: same callable either way
    assert run_cli(*EVAL[:-6], "--cards", str(tiny_cards), "--results", str(local)).returncode == 0
    for ours, theirs in zip(_records(results), _records(local)):
        slurm_record, local_record = json.loads(ours.read_text()), json.loads(theirs.read_text())
        assert [layer["test_score"] for layer in slurm_record["layers"]] == [layer["test_score"] for layer in local_record["layers"]]
    again = run_cli(*EVAL, "--cards", str(tiny_cards), "--results", str(results))
    assert again.returncode == 0 and "0 cell(s) to submit, 2 skipped" in again.stdout and "nothing to submit" in again.stdout


def test_an_unreachable_controller_fails_in_one_line_and_leaves_nothing(slurm: None, tmp_path: Path, tiny_cards: Path) -> None:
    config = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).read_text()
    unreachable = tmp_path / "slurm.conf"  # the same cluster, but its controller on a port nobody listens on
    unreachable.write_text(
        "".join(line + ("\nSlurmctldPort=6999" if line.startswith("SlurmctldHost") else "") + "\n" for line in config.splitlines())
    )
    results = tmp_path / "results"
    proc = run_cli(*EVAL, "--cards", str(tiny_cards), "--results", str(results), env={"SLURM_CONF": str(unreachable)})
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: Slurm did not accept the job array:") and proc.stderr.count("\n") == 1
    assert "Unable to contact slurm controller" in proc.stderr
    assert not (results / "jobs").exists() and not _records(results)


def _wait_until_finished(results: Path, timeout: float = 240) -> str:
    """The ``aimbench jobs`` table once every job has finished (a requeued job shows REQUEUED, then PENDING: not finished)."""
    from aimbench.launch.slurm.jobs import job_rows

    deadline = time.monotonic() + timeout
    while not all(row.finished for row in job_rows(results)) and time.monotonic() < deadline:
        time.sleep(2)
    return run_cli("jobs", "--results", str(results)).stdout


def test_jobs_shows_a_failed_cell_with_its_error_and_cancels_a_pending_one(slurm: None, tmp_path: Path, tiny_cards: Path) -> None:
    results = tmp_path / "results"
    corrupt = tmp_path / "broken.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    failing = run_cli(*EVAL[:2], "micro-cls", *EVAL[3:], "--weights", str(corrupt), "--cards", str(tiny_cards), "--results", str(results))
    assert failing.returncode == 0, failing.stderr  # the weights are only read in the job
    table = _wait_until_finished(results)
    assert "micro-cls@broken|digits|linear|0" in table and "FAILED" in table  # the weights file names the cell
    from aimbench.launch.slurm.jobs import error_tail, job_rows

    [failed] = job_rows(results)
    assert "broken.safetensors" in error_tail(failed)  # the table's error column: the tail of the job's error names the file
    pending = run_cli(
        *EVAL[:2], "micro-patches", *EVAL[3:], "--sbatch", "begin=now+3600", "--cards", str(tiny_cards), "--results", str(results)
    )  # fmt: skip  (it may start only in an hour: it waits)
    assert pending.returncode == 0, pending.stderr
    deadline = time.monotonic() + 30  # the controller gives its reason at its next scheduling pass
    while not (waiting := [row.progress for row in job_rows(results) if row.state == "PENDING" and row.progress]):
        assert time.monotonic() < deadline, job_rows(results)
        time.sleep(1)
    assert waiting[0] == "waiting: BeginTime"  # why it does not start
    cancelled = run_cli("jobs", "--results", str(results), "--cancel", "all")
    assert cancelled.returncode == 0 and "cancelled 1 job(s)" in cancelled.stdout
    assert "CANCELLED" in _wait_until_finished(results)
    again = run_cli("jobs", "--results", str(results), "--cancel", "424242")
    assert again.returncode == 2 and "no unfinished job '424242'" in again.stderr


def _long_cell(cards: Path, epochs: int) -> tuple[str, ...]:
    """A linear cell long enough to be preempted mid-training (600 images, ``epochs`` epochs)."""
    return (
        "eval",
        "-b",
        "micro-cls",
        "-t",
        "digits",
        "--limit",
        "600",
        "--epochs",
        str(epochs),
        "--protocol",
        "aim-v1",
        "--cards",
        str(cards),
    )


def test_a_preempted_cell_requeues_resumes_and_ends_with_the_uninterrupted_numbers(slurm: None, tmp_path: Path, tiny_cards: Path) -> None:
    import submitit

    from aimbench.launch.slurm.jobs import job_rows

    results = tmp_path / "results"
    long_cell = _long_cell(tiny_cards, 400)
    proc = run_cli(*long_cell, "--results", str(results), "--cluster", "slurm", "--cpus-per-task", "1")
    assert proc.returncode == 0, proc.stderr
    [state_file] = (results / "jobs").glob("*.json")
    [cell] = json.loads(state_file.read_text())["cells"]
    deadline = time.monotonic() + 120
    while not list((results / "state").glob("*.pt")) if (results / "state").is_dir() else True:  # training has checkpointed
        assert time.monotonic() < deadline, Path(cell["stderr"]).read_text()[-2000:]
        time.sleep(0.5)
    [row] = job_rows(results)
    assert row.state == "RUNNING" and re.fullmatch(r"linear heads \d+/400 \(\d+%\)", row.progress), row
    submitit.SlurmJob(folder=state_file.with_suffix("") / "%j", job_id=cell["job_id"])._interrupt()  # SIGTERM + USR2: preemption
    deadline, progress_after_resume = time.monotonic() + 240, []
    while not _records(results):
        assert time.monotonic() < deadline, Path(cell["stderr"]).read_text()[-2000:]
        if "resuming" in Path(cell["stderr"]).read_text():
            progress_after_resume += [int(m[1]) for row in job_rows(results) if (m := re.match(r"linear heads (\d+)/400", row.progress))]
        time.sleep(0.5)
    log = Path(cell["stdout"]).read_text()
    assert "this job is preempted" in log and f"Requeued job {cell['job_id']}" in log
    assert log.count("Starting with JobEnvironment") == 2  # preempted, requeued, started again
    resumed_at = re.search(r"resuming \S+ at epoch (\d+), step (\d+)", Path(cell["stderr"]).read_text())
    assert resumed_at and (int(resumed_at[1]), int(resumed_at[2])) > (0, 0)  # from the training state on disk, not from scratch
    shown = [epochs for epochs in progress_after_resume if epochs > 0]  # 0/400 shows briefly as the stage starts again
    assert shown and min(shown) > int(resumed_at[1]), progress_after_resume  # counted from the resumed epoch, not from 0
    assert not list((results / "state").glob("*"))  # resume state and progress are dropped once the record exists
    local = tmp_path / "local"
    assert run_cli(*long_cell, "--results", str(local)).returncode == 0
    requeued, straight = (json.loads(_records(r)[0].read_text()) for r in (results, local))
    assert [(x["val_score"], x["test_score"]) for x in requeued["layers"]] == [
        (x["val_score"], x["test_score"]) for x in straight["layers"]
    ]


def _pretrain_images(folder: Path) -> Path:
    from PIL import Image

    folder.mkdir()
    for i in range(16):
        Image.new("RGB", (16, 16), (i * 15, 255 - i * 15, (i * 40) % 256)).save(folder / f"{i}.png")
    return folder


PRETRAIN = ("pretrain", "aim-micro", "--batch-size", "8", "--workers", "0", "--device", "cpu")
ON_SLURM = ("--cluster", "slurm", "--tasks-per-node", "2", "--cpus-per-task", "1", "--time", "10")


def test_pretraining_runs_as_one_job_of_two_slurm_tasks_with_the_world_from_slurm(slurm: None, tmp_path: Path) -> None:
    images, run = _pretrain_images(tmp_path / "images"), tmp_path / "run"
    proc = run_cli(*PRETRAIN, "--data", str(images), "--steps", "4", "--save-every", "2", "--out", str(run), *ON_SLURM)
    assert proc.returncode == 0, proc.stderr
    assert "(1 node(s) x 2 task(s))" in proc.stdout
    table = _wait_until_finished(run)
    assert "COMPLETED" in table, table
    assert json.loads((run / "config.json").read_text())["runtime"] == {
        "world_size": 2,
        "strategy": "ddp",
        "activation_checkpointing": False,
    }
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4 and (run / "trunk.safetensors").is_file()
    again = run_cli("pretrain", "aim-micro", "--data", str(images), "--out", str(run), "--cluster", "slurm")
    assert again.returncode == 2 and "already holds a run; pass --resume" in again.stderr


def test_a_preempted_pretraining_job_resumes_its_checkpoint_and_matches_a_straight_run(slurm: None, tmp_path: Path) -> None:
    import submitit

    from aimbench.launch.slurm.jobs import job_rows

    images, run = _pretrain_images(tmp_path / "images"), tmp_path / "run"
    settings = ("--data", str(images), "--steps", "300", "--save-every", "25", "--lr", "3e-3")
    one_thread = {"OMP_NUM_THREADS": "1"}  # as torchrun sets it; sbatch passes the environment on to the job
    assert run_cli(*PRETRAIN, *settings, "--out", str(run), *ON_SLURM, env=one_thread).returncode == 0
    [state_file] = (run / "jobs").glob("*.json")
    state = json.loads(state_file.read_text())
    deadline = time.monotonic() + 120
    while not (run / "checkpoint.pt").exists():
        assert time.monotonic() < deadline, Path(state["stderr"]).read_text()[-2000:]
        time.sleep(0.2)
    [row] = job_rows(run)
    assert re.fullmatch(r"step \d+/300 loss \d\.\d{4}", row.progress), (row.state, row.progress)
    submitit.SlurmJob(folder=state_file.with_suffix("") / "%j", job_id=state["job_id"])._interrupt()
    assert "COMPLETED" in _wait_until_finished(run)
    log = Path(state["stdout"]).read_text()
    assert f"Requeued job {state['job_id']}" in log and log.count("Starting with JobEnvironment") == 2, log[-3000:]
    straight = tmp_path / "straight"  # the same two ranks under torchrun, never interrupted
    torchrun = subprocess.run(
        [str(Path(sys.executable).with_name("torchrun")), "--nproc-per-node", "2", "--master-port", "29671", "-m", "aimbench",
         *PRETRAIN, *settings, "--out", str(straight)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1", **one_thread},
    )  # fmt: skip
    assert torchrun.returncode == 0, torchrun.stderr[-2000:]
    losses = [[json.loads(line)["loss"] for line in (r / "metrics.jsonl").read_text().splitlines()] for r in (run, straight)]
    assert len(losses[0]) == 300 and losses[0] == losses[1]  # resumed bit for bit, no step lost or repeated
    assert (run / "trunk.safetensors").read_bytes() == (straight / "trunk.safetensors").read_bytes()


def test_one_cell_runs_as_one_job_of_two_slurm_tasks_to_one_record(slurm: None, tmp_path: Path, tiny_cards: Path) -> None:
    from aimbench.launch.slurm.jobs import job_rows

    results = tmp_path / "results"
    cell = (*EVAL[:2], "micro-cls", *EVAL[3:])
    proc = run_cli(*cell, "--nodes", "1", "--tasks-per-node", "2", "--cards", str(tiny_cards), "--results", str(results),
                   env={"OMP_NUM_THREADS": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "tasks_per_node=2, nodes=1" in proc.stdout and "submitted 1 cell(s)" in proc.stdout, proc.stdout
    [state_file] = (results / "jobs").glob("*.json")
    state = json.loads(state_file.read_text())
    assert state["world"] == {"nodes": 1, "tasks_per_node": 2, "ranks": 2}
    [submitted] = state["cells"]
    assert submitted["resources"]["srun_args"] == ["--kill-on-bad-exit=1"]
    table = _wait_until_finished(results, timeout=600)  # two ranks on one CPU each: minutes where the machine is busy
    assert "COMPLETED" in table, (table, Path(submitted["stderr"]).read_text()[-3000:])
    [row] = job_rows(results)  # one row for the cell, not one per task
    assert row.record and row.cell == submitted["key"]
    [record] = _records(results)
    assert record.name == submitted["record"]
    rank_one = Path(submitted["stdout"].replace("_0_log.out", "_1_log.out"))
    assert "global_rank=1(2)" in rank_one.read_text()  # the second task ran the cell as rank 1 of 2
    local = tmp_path / "local"  # the same cell on one rank here
    assert run_cli(*cell[:-6], "--cards", str(tiny_cards), "--results", str(local)).returncode == 0
    two, one = (json.loads(_records(r)[0].read_text()) for r in (results, local))
    assert two["environment"]["world_size"] == 2 and one["environment"]["world_size"] == 1
    assert [(x["val_score"], x["test_score"]) for x in two["layers"]] == [(x["val_score"], x["test_score"]) for x in one["layers"]]


def test_a_preempted_two_rank_cell_requeues_once_and_resumes_to_the_one_rank_numbers(slurm: None, tmp_path: Path, tiny_cards: Path) -> None:
    import submitit

    results = tmp_path / "results"
    long_cell = _long_cell(tiny_cards, 200)
    on_two = ("--cluster", "slurm", "--cpus-per-task", "1", "--nodes", "1", "--tasks-per-node", "2")
    proc = run_cli(*long_cell, "--results", str(results), *on_two, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    [state_file] = (results / "jobs").glob("*.json")
    [cell] = json.loads(state_file.read_text())["cells"]
    deadline = time.monotonic() + 300
    while len(list((results / "state").glob("*.rank*of2.pt")) if (results / "state").is_dir() else []) < 2:  # both ranks checkpointed
        assert time.monotonic() < deadline, Path(cell["stderr"]).read_text()[-2000:]
        time.sleep(0.5)
    submitit.SlurmJob(folder=state_file.with_suffix("") / "%j", job_id=cell["job_id"])._interrupt()  # SIGTERM + USR2 to every task
    deadline = time.monotonic() + 900  # two ranks on one CPU each: many minutes where the machine is busy
    while not _records(results):
        assert time.monotonic() < deadline, Path(cell["stderr"]).read_text()[-2000:]
        time.sleep(1)
    rank_zero, rank_one = Path(cell["stdout"]).read_text(), Path(cell["stdout"].replace("_0_log.out", "_1_log.out")).read_text()
    # rank 0 alone requeues (rank 1's own "not requeuing" line races the requeue that ends it, so it may be missing)
    assert rank_zero.count(f"Requeued job {cell['job_id']}") == 1 and "Requeued job" not in rank_one
    assert rank_zero.count("Starting with JobEnvironment") == 2 and rank_one.count("Starting with JobEnvironment") == 2
    assert "resuming" in Path(cell["stderr"]).read_text()  # from the states on disk, not from scratch
    assert "COMPLETED" in _wait_until_finished(results)
    local = tmp_path / "local"
    assert run_cli(*long_cell, "--results", str(local), env={"OMP_NUM_THREADS": "1"}).returncode == 0
    requeued, straight = (json.loads(_records(r)[0].read_text()) for r in (results, local))
    assert requeued["environment"]["world_size"] == 2
    assert [(x["val_score"], x["test_score"]) for x in requeued["layers"]] == [
        (x["val_score"], x["test_score"]) for x in straight["layers"]
    ]
