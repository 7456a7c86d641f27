"""Multi-process training on the CPU (issue 11, item 1): scripts/train.py
--gpus 2 with no GPU launches torchrun with 2 gloo processes (launcher
pytorch, MMDistributedDataParallel on CPU devices), on the demo L1 model.

tests/dist_probe.py records what each rank reads (and can stall one rank at
a known iteration, so that the SIGKILL test is deterministic)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from oidseg.mmdet_ext.dataset import make_synthetic_dataset
from oidseg.mmdet_ext.sampler import OrderedListSampler
from oidseg.train import build_config, build_parser, stage_lr

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train.py"
N_IMAGES = 16
WORLD = 2

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or
                                not torch.distributed.is_gloo_available(),
                                reason="torch built without gloo")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp_shapes")
    make_synthetic_dataset(str(root), n_images=N_IMAGES, n_classes=3, seed=0, size_range=(96, 128))
    rng = np.random.default_rng(1)
    np.save(root / "order.npy", np.concatenate([rng.permutation(N_IMAGES) for _ in range(4)]))
    return root


def probe_config(tmp: Path) -> Path:
    """configs/demo/L1.py plus the probe hook, writing into tmp/probe."""
    path = tmp / "L1_probe.py"
    path.write_text(
        f"_base_ = [{str(ROOT / 'configs' / 'demo' / 'L1.py')!r}]\n"
        "custom_imports = dict(imports=['oidseg.mmdet_ext', 'dist_probe'], "
        "allow_failed_imports=False)\n"
        f"custom_hooks = [dict(type='BatchProbeHook', out_dir={str(tmp / 'probe')!r})]\n")
    return path


def train_cmd(config, data, out, iters, *extra):
    return [sys.executable, str(SCRIPT), "--config", str(config),
            "--ann", str(data / "ann.pkl"), "--order", str(data / "order.npy"),
            "--iters", str(iters), "--work-dir", str(out / "work"), "--out", str(out / "final.pth"),
            "--log-jsonl", str(out / "log.jsonl"), "--threads", "1", "--seed", "0",
            "--images-per-gpu", "1", "--log-interval", "1", *extra]


def run_env(**extra):
    return {**os.environ, **extra, "CUDA_VISIBLE_DEVICES": "",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}


def run(cmd):
    proc = subprocess.run(cmd, env=run_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def probe(out: Path, rank: int) -> dict[int, list[int]]:
    lines = (out / "probe" / f"rank{rank}.jsonl").read_text().splitlines()
    return {e["iter"]: e["indices"] for e in map(json.loads, lines)}


def expected(order: np.ndarray, skip: int, rank: int, iters: range) -> dict[int, list[int]]:
    """Rank r, iteration i (1-based), 1 image per process: list position
    skip + r + (i - 1) x W."""
    return {i: [int(order[(skip + rank + (i - 1) * WORLD) % order.size])] for i in iters}


def read_log(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def two_ranks(data, tmp_path_factory):
    """One 2-process stage of 3 iterations that skips 5 entries."""
    out = tmp_path_factory.mktemp("ddp_run")
    proc = run(train_cmd(probe_config(out), data, out, 3, "--gpus", str(WORLD), "--skip", "5",
                         "--checkpoint-interval", "100"))
    return out, proc


@pytest.mark.slow
def test_each_rank_reads_its_entries_after_the_skip(data, two_ranks):
    out, proc = two_ranks
    assert "torch.distributed.run" in proc.stderr and "--launcher pytorch" in proc.stderr
    order = np.load(data / "order.npy")
    seen = {r: probe(out, r) for r in range(WORLD)}
    for r in range(WORLD):
        assert seen[r] == expected(order, 5, r, range(1, 4))
    # together: exactly what one process reads at 2 images per iteration
    ann = type("Sized", (), {"__len__": lambda self: N_IMAGES})()
    single = OrderedListSampler(ann, data / "order.npy", skip=5)
    assert single.world_size == 1
    one_process = single.indices(3 * WORLD).reshape(3, WORLD)
    for i in range(1, 4):
        assert sorted(seen[0][i] + seen[1][i]) == sorted(one_process[i - 1].tolist())


@pytest.mark.slow
def test_lr_uses_the_world_size_and_rank0_writes_once(data, two_ranks):
    out, proc = two_ranks
    args = build_parser().parse_args(train_cmd(ROOT / "configs" / "demo" / "L1.py", data, out, 3)[2:])
    cfg = build_config(args, world_size=1)
    lr = stage_lr(cfg, 1.0, 1 * WORLD)  # 1 image per process x 2 processes
    assert lr != pytest.approx(stage_lr(cfg, 1.0, 1))
    assert "images/iter=2" in proc.stderr and f"lr={lr:.6g}" in proc.stderr
    log = read_log(out / "log.jsonl")
    assert [e["iter"] for e in log] == [1, 2, 3]  # one writer
    assert log[-1]["lr"] == pytest.approx(lr)  # warm-up (3 iterations) done
    assert proc.stderr.count("train: wrote") == 1
    ckpt = torch.load(out / "final.pth", weights_only=True)
    assert ckpt["meta"]["iter"] == 3
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])


@pytest.mark.slow
def test_ddp_checkpoint_continues_in_one_process(data, two_ranks, tmp_path):
    out, _ = two_ranks
    config = ROOT / "configs" / "demo" / "L1.py"
    # next stage, one process, vanishing LR: its weights stay those loaded
    run(train_cmd(config, data, tmp_path, 1, "--load-from", str(out / "final.pth"),
                  "--skip", "11", "--lr-factor", "1e-9", "--gpus", "1"))
    w1 = torch.load(out / "final.pth", weights_only=True)["state_dict"]
    w2 = torch.load(tmp_path / "final.pth", weights_only=True)["state_dict"]
    assert w1.keys() == w2.keys()
    key = "roi_head.bbox_head.0.fc_cls.weight"
    assert (w1[key] - w2[key]).abs().max() < 1e-5


@pytest.mark.slow
def wait_until_unlocked(lock_file: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with open(lock_file, "rb") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                assert time.monotonic() < deadline, f"{lock_file} is still locked"
                time.sleep(0.2)
            else:
                fcntl.flock(fh, fcntl.LOCK_UN)
                return


def test_sigkill_of_one_rank_then_rerun_resumes(data, tmp_path):
    config = probe_config(tmp_path)
    cmd = train_cmd(config, data, tmp_path, 5, "--gpus", str(WORLD), "--checkpoint-interval", "2")
    err_file = tmp_path / "first.stderr"
    with open(err_file, "w") as err_fh:
        proc = subprocess.Popen(cmd, env=run_env(OIDSEG_PROBE_STALL="1:3"),
                                stdout=subprocess.DEVNULL, stderr=err_fh, start_new_session=True)
    stalled = tmp_path / "probe" / "stalled"
    deadline = time.monotonic() + 600
    try:
        while not stalled.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert stalled.is_file(), "rank 1 never reached iteration 3"
        # the launcher dies first (as when its job's shell is killed): torchrun,
        # its orphan, still holds the work dir's lock, so a rerun cannot start beside it
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        beside = subprocess.run(cmd, env=run_env(), capture_output=True, text=True, timeout=300)
        assert beside.returncode == 2, beside.stderr[-2000:]
        assert "holds this work dir" in beside.stderr
        os.kill(int(stalled.read_text()), signal.SIGKILL)  # rank 1, mid-stage
        wait_until_unlocked(tmp_path / "work" / ".lock", timeout=300)  # torchrun gave up
    finally:
        with contextlib.suppress(ProcessLookupError):  # torchrun and its workers, if left
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0, err_file.read_text()[-3000:]
    assert not (tmp_path / "final.pth").exists()
    # rank 0 cannot finish iteration 4 without rank 1: the latest checkpoint is iteration 2
    marker = tmp_path / "work" / "last_checkpoint"
    assert Path(marker.read_text().strip()).name == "iter_2.pth"

    # the same command again (without the probe's stall)
    for f in (tmp_path / "probe").glob("rank*.jsonl"):
        f.unlink()
    second = run(cmd)
    assert "Resume at iteration 2" in second.stderr
    order = np.load(data / "order.npy")
    for r in range(WORLD):
        assert probe(tmp_path, r) == expected(order, 0, r, range(3, 6))
    assert [e["iter"] for e in read_log(tmp_path / "log.jsonl")] == [1, 2, 3, 4, 5]
    assert torch.load(tmp_path / "final.pth", weights_only=True)["meta"]["iter"] == 5


def test_nccl_without_a_gpu_is_a_clear_error(data, tmp_path):
    cmd = train_cmd(ROOT / "configs" / "demo" / "L1.py", data, tmp_path, 2,
                    "--gpus", "2", "--dist-backend", "nccl")
    proc = subprocess.run(cmd, env=run_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--dist-backend nccl needs CUDA GPUs and none is visible" in proc.stderr
    assert not (tmp_path / "final.pth").exists()
