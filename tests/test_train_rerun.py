"""Reruns of scripts/train.py: an unchanged rerun resumes without training;
a changed input trains again from iteration 0; a truncated newest
checkpoint falls back to the previous one and, with the random state
restored, ends with the same bytes as the uninterrupted run; two identical
fresh runs write byte-identical weights.

Every test restores the same first run at the same paths (the final
weights' meta holds the config, paths included)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from oidseg.mmdet_ext.dataset import make_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train.py"
CONFIG = ROOT / "configs" / "demo" / "L1.py"

pytestmark = pytest.mark.slow


def train(run, *extra):
    cmd = [sys.executable, str(SCRIPT), "--config", str(CONFIG), "--ann", str(run / "data" / "ann.pkl"),
           "--order", str(run / "order.npy"), "--iters", "2", "--work-dir", str(run / "work"),
           "--out", str(run / "final.pth"), "--log-jsonl", str(run / "log.jsonl"),
           "--checkpoint-interval", "1", "--log-interval", "1", "--threads", "2", "--seed", "0", *extra]
    proc = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def logged_iters(run):
    return [json.loads(line)["iter"] for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """(run folder, its snapshot, the final weights' bytes) of a 2-iteration stage."""
    base = tmp_path_factory.mktemp("rerun")
    run = base / "run"
    make_synthetic_dataset(str(run / "data"), n_images=8, n_classes=3, seed=0)
    np.save(run / "order.npy", np.random.default_rng(0).permutation(8))
    train(run)
    snapshot = base / "snapshot"
    shutil.copytree(run, snapshot)
    return run, snapshot, (run / "final.pth").read_bytes()


@pytest.fixture
def run(first):
    run, snapshot, _ = first
    shutil.rmtree(run)
    shutil.copytree(snapshot, run)
    return run


def test_unchanged_rerun_resumes_without_training(first, run):
    stderr = train(run)
    assert "resuming from iter_2.pth" in stderr
    assert "Saving checkpoint" not in stderr  # no iteration ran
    assert logged_iters(run) == [1, 2]
    assert (run / "final.pth").read_bytes() == first[2]


def test_changed_input_trains_again_and_identical_runs_match(first, run):
    original = (run / "order.npy").read_bytes()
    np.save(run / "order.npy", np.random.default_rng(1).permutation(8))
    stderr = train(run)
    assert "held another job's checkpoints (order: sha256" in stderr
    assert "this stage starts afresh" in stderr
    assert "Saving checkpoint at 1 iterations" in stderr  # trained from iteration 0
    assert logged_iters(run) == [1, 2]
    assert (run / "work.stale" / "iter_2.pth").is_file()
    old = torch.load(run.parent / "snapshot" / "final.pth", weights_only=True)["state_dict"]
    new = torch.load(run / "final.pth", weights_only=True)["state_dict"]
    key = "roi_head.bbox_head.0.fc_cls.weight"
    assert not torch.equal(old[key], new[key])

    # back to the first run's input: a fresh run again, byte-identical to the first one
    (run / "order.npy").write_bytes(original)
    stderr = train(run)
    assert "this stage starts afresh" in stderr
    assert (run / "final.pth").read_bytes() == first[2]


def test_truncated_newest_checkpoint_falls_back_and_resumes_exactly(first, run):
    newest = run / "work" / "iter_2.pth"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    (run / "final.pth").unlink()
    stderr = train(run)
    assert f"{newest} is truncated or corrupt" in stderr
    assert "resuming from iter_1.pth" in stderr
    assert "restored the random state of iteration 1" in stderr
    assert logged_iters(run) == [1, 2]
    # the same random numbers as the uninterrupted run: the same weights, the same bytes
    assert (run / "final.pth").read_bytes() == first[2]
