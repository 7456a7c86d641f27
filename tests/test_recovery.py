"""Failure recovery as a user meets it: a killed controller, a killed
training job, a killed inference run, a corrupt intermediate file."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from wf import env_with_venv, job_counts, new_workdir, snakemake, snakemake_cmd

pytestmark = pytest.mark.workflow

TINY = ("--configfile", "tiny.yaml")


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    return new_workdir(tmp_path, "tiny.yaml")


def start(workdir: Path, *args: str) -> subprocess.Popen:
    """Snakemake in its own process group, so that SIGKILL reaches its jobs too."""
    log = open(workdir / "controller.log", "w")
    return subprocess.Popen(
        snakemake_cmd(*args), cwd=workdir, env=env_with_venv(), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill_when(proc: subprocess.Popen, ready, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "snakemake ended before the kill point"
        assert time.monotonic() < deadline, "kill point not reached in time"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_sigkill_during_training_then_rerun_resumes(workdir):
    (workdir / "longer.yaml").write_text(
        "models:\n  P1:\n    stages:\n"
        "      - {lr_factor: 1.0, list: parent, iters: 16, aug: single}\n"
        "      - {lr_factor: 0.2, list: parent, iters: 2, aug: photometric}\n"
        "      - {lr_factor: 0.02, list: parent, iters: 2, aug: photometric}\n"
        "training: {checkpoint_interval: 4}\n"
    )
    # several config files go after ONE --configfile (a second flag replaces the first)
    args = ("--cores", "2", "results/models/P1/stage1.pth", *TINY, "longer.yaml")
    snakemake(*args, "--until", "build_list", cwd=workdir)  # the inputs, quickly
    work = workdir / "work/P1/stage1"
    proc = start(workdir, *args)
    # mmengine writes last_checkpoint after a checkpoint is complete (a kill
    # inside the write leaves a truncated file, which a rerun rightly skips)
    kill_when(proc, lambda: (work / "last_checkpoint").is_file())
    assert not (workdir / "results/models/P1/stage1.pth").exists()

    # the killed controller left its lock: a plain rerun refuses, --unlock clears it
    assert snakemake(*args, cwd=workdir, check=False).returncode != 0
    snakemake("--unlock", *args, cwd=workdir)
    snakemake(*args, "--rerun-incomplete", cwd=workdir)
    log = (workdir / "logs/train/P1_stage1.log").read_text()
    assert "Resume at iteration" in log, log[-2000:]
    assert (workdir / "results/models/P1/stage1.pth").is_file()


def test_sigkill_during_inference_reruns_only_unfinished_shards(workdir):
    (workdir / "shards.yaml").write_text("annotations: {n_shards: 6}\ndemo: {n_test: 12}\n")
    args = ("--cores", "1", "infer_parent", *TINY, "shards.yaml")
    # everything but the inference first (--until train trips Snakemake on
    # the self-chained train rule: snakemake/snakemake#823)
    snakemake("--cores", "2", "train_P1", "annotations", *TINY, "shards.yaml", cwd=workdir)
    out = workdir / "results/inference/parent/test"
    proc = start(workdir, *args)
    logs = workdir / "logs/infer"

    def next_shard_running() -> bool:
        # with --cores 1 the next job starts only once the controller has
        # recorded the previous one as complete: kill while it runs
        done = len(list(out.glob("*.pkl"))) if out.is_dir() else 0
        started = len(list(logs.glob("parent_test_*.log"))) if logs.is_dir() else 0
        return done >= 2 and started == done + 1

    kill_when(proc, next_shard_running)
    done = sorted(p.stem for p in out.glob("*.pkl"))
    assert 2 <= len(done) < 6
    snakemake("--unlock", *args, cwd=workdir)
    plan = snakemake("-n", *args, "--rerun-incomplete", cwd=workdir)
    assert job_counts(plan.stdout).get("infer") == 6 - len(done)
    assert job_counts(plan.stdout).get("train") is None


def test_corrupt_intermediate_stops_the_next_rule_with_its_name(workdir):
    snakemake("--cores", "2", "annotations", *TINY, cwd=workdir)
    ann = workdir / "results/annotations"
    data = (ann / "parent_train.pkl").read_bytes()
    (ann / "parent_train.pkl").write_bytes(data[: len(data) // 2])  # truncated
    (ann / "lists/parent.npy").unlink()
    proc = snakemake("--cores", "1", str(ann.relative_to(workdir) / "lists/parent.npy"), *TINY, cwd=workdir, check=False)
    assert proc.returncode != 0
    log = (workdir / "logs/build_list/parent.log").read_text()
    assert "parent_train.pkl" in log and "truncated or corrupt" in log
    # a failing job leaves no partial output
    assert not (ann / "lists/parent.npy").exists()
    assert not list((ann / "lists").glob(".*"))
