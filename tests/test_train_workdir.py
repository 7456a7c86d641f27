"""The work dir of a training stage (oidseg/stage_dir.py), without training:
job fingerprint, stale checkpoints moved aside, newest intact checkpoint,
one trainer per work dir."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from oidseg.errors import InputError
from oidseg.mmdet_ext.dataset import make_synthetic_dataset
from oidseg.stage_dir import job_fingerprint, lock_work_dir, prepare_work_dir, unlock_work_dir
from oidseg.train import build_parser

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train.py"
CONFIG = ROOT / "configs" / "demo" / "L1.py"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    make_synthetic_dataset(str(root), n_images=4, n_classes=3, seed=0)
    np.save(root / "order.npy", np.arange(4).repeat(3))
    torch.save({"state_dict": {"w": torch.ones(2)}}, root / "prev.pth")
    return root


def argv(data, work, *extra):
    return ["--config", str(CONFIG), "--ann", str(data / "ann.pkl"), "--order", str(data / "order.npy"),
            "--iters", "4", "--work-dir", str(work), "--out", str(work.parent / "final.pth"),
            "--log-jsonl", str(work.parent / "log.jsonl"), *extra]


def args_of(data, work, *extra):
    return build_parser().parse_args(argv(data, work, *extra))


def fake_checkpoint(work, n):
    path = work / f"iter_{n}.pth"
    torch.save({"meta": {"iter": n}, "state_dict": {"w": torch.full((1000,), float(n))}}, path)
    return path


def test_fingerprint_tracks_inputs_and_result_arguments(data, tmp_path):
    base = job_fingerprint(args_of(data, tmp_path / "w"))
    # not part of the job: intervals, threads, output paths
    assert job_fingerprint(args_of(data, tmp_path / "other", "--checkpoint-interval", "2",
                                   "--log-interval", "3", "--threads", "2")) == base
    for extra, key in [(("--lr-factor", "0.5"), "lr_factor"), (("--iters", "5"), "iters"),
                       (("--skip", "8"), "skip"), (("--aug", "single"), "aug"),
                       (("--seed", "1"), "seed"), (("--images-per-gpu", "1"), "images_per_gpu"),
                       (("--load-from", str(data / "prev.pth")), "load_from")]:
        changed = job_fingerprint(args_of(data, tmp_path / "w", *extra))
        assert [k for k in base if base[k] != changed[k]] == [key], extra
    # pretrained weights: a local file by content, a model-zoo name by itself, none after --load-from
    local = job_fingerprint(args_of(data, tmp_path / "w", "--pretrained", str(data / "prev.pth")))
    assert local["pretrained"] == job_fingerprint(
        args_of(data, tmp_path / "w", "--load-from", str(data / "prev.pth")))["load_from"]
    named = job_fingerprint(args_of(data, tmp_path / "w", "--pretrained", "torchvision://resnet101"))
    assert named["pretrained"] == "torchvision://resnet101"
    assert job_fingerprint(args_of(data, tmp_path / "w", "--pretrained", "torchvision://resnet101",
                                   "--load-from", str(data / "prev.pth")))["pretrained"] is None
    # the same path with other content is another job
    order = tmp_path / "order.npy"
    np.save(order, np.arange(4))
    first = job_fingerprint(args_of(data, tmp_path / "w", "--order", str(order)))
    np.save(order, np.arange(4)[::-1])
    second = job_fingerprint(args_of(data, tmp_path / "w", "--order", str(order)))
    assert [k for k in first if first[k] != second[k]] == ["order"]


def test_another_jobs_checkpoints_are_moved_aside(data, tmp_path):
    work = tmp_path / "work"
    lines = []
    assert prepare_work_dir(args_of(data, work), lines.append) is None
    fake_checkpoint(work, 2)
    assert prepare_work_dir(args_of(data, work), lines.append) == work / "iter_2.pth"
    assert (work / "last_checkpoint").read_text() == str(work / "iter_2.pth")
    assert "resuming from iter_2.pth" in lines[-1]

    lines.clear()
    assert prepare_work_dir(args_of(data, work, "--lr-factor", "0.5"), lines.append) is None
    assert "lr_factor: 1.0 -> 0.5" in lines[0] and "starts afresh" in lines[0]
    assert sorted(p.name for p in work.iterdir()) == [".lock", "job.json"]
    stale = tmp_path / "work.stale"
    assert sorted(p.name for p in stale.iterdir()) == ["iter_2.pth", "job.json", "last_checkpoint"]
    assert json.loads((work / "job.json").read_text())["lr_factor"] == 0.5
    unlock_work_dir(work)


def test_checkpoints_without_fingerprint_are_moved_aside(data, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    fake_checkpoint(work, 4)
    lines = []
    assert prepare_work_dir(args_of(data, work), lines.append) is None
    assert "no job fingerprint" in lines[0]
    assert (tmp_path / "work.stale" / "iter_4.pth").is_file()
    unlock_work_dir(work)


def test_truncated_newest_checkpoint_falls_back(data, tmp_path):
    work = tmp_path / "work"
    lines = []
    prepare_work_dir(args_of(data, work), lines.append)
    fake_checkpoint(work, 2)
    newest = fake_checkpoint(work, 4)
    (work / "last_checkpoint").write_text(str(newest))
    newest.write_bytes(newest.read_bytes()[:-300])
    assert prepare_work_dir(args_of(data, work), lines.append) == work / "iter_2.pth"
    assert "iter_4.pth is truncated or corrupt" in lines[0]
    assert not newest.exists()
    assert (work / "last_checkpoint").read_text() == str(work / "iter_2.pth")
    # nothing intact: start afresh
    (work / "iter_2.pth").write_bytes(b"PK\x03\x04 torn")
    assert prepare_work_dir(args_of(data, work), lines.append) is None
    assert not (work / "last_checkpoint").exists()
    unlock_work_dir(work)


def test_payload_checkpoint_in_the_work_dir_is_refused(data, tmp_path):
    from test_checkpoints import write_payload

    work = tmp_path / "work"
    prepare_work_dir(args_of(data, work), lambda line: None)
    marker = tmp_path / "ran"
    write_payload(work / "iter_3.pth", marker)
    with pytest.raises(InputError, match=r"iter_3.pth: checkpoint holds objects other than tensors "
                                         r"and plain data \(posix.system\); refused"):
        prepare_work_dir(args_of(data, work), lambda line: None)
    assert not marker.exists()
    unlock_work_dir(work)


def test_second_trainer_on_a_work_dir_fails_at_once(data, tmp_path):
    work = tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from oidseg.stage_dir import lock_work_dir; "
         "lock_work_dir(sys.argv[1]); print('locked', flush=True); time.sleep(120)", str(work)],
        env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        start = time.monotonic()
        proc = subprocess.run([sys.executable, str(SCRIPT), *argv(data, work)], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert f"{work}: another training job (pid {holder.pid}) holds this work dir" in proc.stderr
        assert time.monotonic() - start < 60
        assert not (tmp_path / "final.pth").exists()
        with pytest.raises(InputError, match=f"pid {holder.pid}"):
            lock_work_dir(work)
    finally:
        holder.kill()
        holder.wait()
    # the holder's death releases the lock
    fd = os.open(work / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(fd)
