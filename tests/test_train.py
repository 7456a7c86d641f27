"""scripts/train.py on the CPU with a demo config and a tiny synthetic dataset:
the loss goes down, stages chain through --load-from, a killed run resumes."""

from __future__ import annotations

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
from oidseg.mmdet_ext.model_cfg import set_num_classes
from oidseg.train import build_config, build_parser, stage_lr

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train.py"
CONFIG = ROOT / "configs" / "demo" / "L1.py"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    make_synthetic_dataset(str(root), n_images=16, n_classes=3, seed=0)
    rng = np.random.default_rng(0)
    order = np.concatenate([rng.permutation(16) for _ in range(10)])
    np.save(root / "order.npy", order)
    return root


def train_cmd(data, out_dir, iters, *extra):
    return [sys.executable, str(SCRIPT), "--config", str(CONFIG),
            "--ann", str(data / "ann.pkl"), "--order", str(data / "order.npy"),
            "--iters", str(iters), "--work-dir", str(out_dir / "work"),
            "--out", str(out_dir / "final.pth"), "--log-jsonl", str(out_dir / "log.jsonl"),
            "--threads", "2", "--seed", "0", *extra]


def run_env():
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def run(cmd):
    proc = subprocess.run(cmd, env=run_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def read_log(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_lr_rule_and_num_classes_override(data, tmp_path):
    args = build_parser().parse_args(train_cmd(data, tmp_path, 10, "--lr-factor", "0.2")[2:])
    cfg = build_config(args, world_size=1)
    # demo: base LR 0.02 for 2 images per iteration, demo batch 2
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(0.02 * 0.2)
    assert stage_lr(cfg, 1.0, 8) == pytest.approx(0.08)
    assert [h["num_classes"] for h in cfg.model.roi_head.bbox_head] == [3, 3, 3]
    assert cfg.model.roi_head.mask_head.num_classes == 3
    assert cfg.param_scheduler[0]["end"] == 10  # warm-up clipped to the stage
    assert cfg.train_dataloader.sampler == dict(
        type="OrderedListSampler", order_file=str(data / "order.npy"), skip=0)
    set_num_classes(cfg.model, 7)
    assert cfg.model.roi_head.bbox_head[2]["num_classes"] == 7


@pytest.fixture(scope="module")
def stage1(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1")
    proc = run(train_cmd(data, out, 20, "--log-interval", "5", "--checkpoint-interval", "10"))
    return out, proc


@pytest.mark.slow
def test_one_demo_stage_learns(stage1):
    out, proc = stage1
    log = read_log(out / "log.jsonl")
    assert [e["iter"] for e in log] == [5, 10, 15, 20]
    assert log[-1]["loss"] < 0.8 * log[0]["loss"]
    assert {"lr", "loss", "loss_rpn_cls", "s0.loss_mask", "s2.loss_cls"} <= set(log[0])
    ckpt = torch.load(out / "final.pth", weights_only=True)
    assert ckpt["meta"]["dataset_meta"]["classes"] == ["/m/syn00", "/m/syn01", "/m/syn02"]
    assert ckpt["meta"]["iter"] == 20
    assert (out / "work" / "iter_20.pth").is_file()
    assert not list(out.glob(".*.tmp"))


@pytest.mark.slow
def test_next_stage_starts_from_previous_weights(data, stage1, tmp_path):
    s1_out, _ = stage1
    # a vanishing LR keeps stage 2's weights at its starting point
    run(train_cmd(data, tmp_path, 2, "--load-from", str(s1_out / "final.pth"),
                  "--lr-factor", "1e-9", "--skip", "40", "--log-interval", "1"))
    w1 = torch.load(s1_out / "final.pth", weights_only=True)["state_dict"]
    w2 = torch.load(tmp_path / "final.pth", weights_only=True)["state_dict"]
    key = "roi_head.bbox_head.0.fc_cls.weight"
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    init_default_scope("mmdet")
    args = build_parser().parse_args(train_cmd(data, tmp_path, 2)[2:])
    fresh = MODELS.build(build_config(args, 1).model)
    fresh.init_weights()
    w0 = fresh.state_dict()[key]
    assert (w1[key] - w2[key]).abs().max() < 1e-4
    assert (w1[key] - w0).abs().max() > 100 * (w1[key] - w2[key]).abs().max()
    # fresh optimiser and schedule: the iteration counter restarts, warm-up again
    log = read_log(tmp_path / "log.jsonl")
    assert [e["iter"] for e in log] == [1, 2]
    assert log[0]["lr"] < log[1]["lr"]


@pytest.mark.slow
def test_killed_run_resumes_from_its_checkpoint(data, tmp_path):
    cmd = train_cmd(data, tmp_path, 10, "--checkpoint-interval", "3", "--log-interval", "1")
    proc = subprocess.Popen(cmd, env=run_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    marker = tmp_path / "work" / "last_checkpoint"
    deadline = time.monotonic() + 600
    try:
        while not marker.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert marker.is_file(), "no checkpoint before the deadline"
    assert not (tmp_path / "final.pth").exists()
    resumed_at = int(Path(marker.read_text().strip()).stem.split("_")[1])
    assert resumed_at in (3, 6, 9)

    second = run(cmd)
    assert f"Resume at iteration {resumed_at}" in second.stderr
    log = read_log(tmp_path / "log.jsonl")
    assert [e["iter"] for e in log] == list(range(1, 11))
    # the rerun's own scalar log (mmengine, newest run folder) starts after the checkpoint
    runs = sorted(p for p in (tmp_path / "work").iterdir() if p.is_dir())
    scalars = [json.loads(line) for line in
               (runs[-1] / "vis_data" / "scalars.json").read_text().splitlines()]
    assert scalars[0]["iter"] == resumed_at + 1
    assert torch.load(tmp_path / "final.pth", weights_only=True)["meta"]["iter"] == 10


def test_missing_inputs_are_clear_errors(data, tmp_path):
    cmd = train_cmd(data, tmp_path, 5, "--load-from", str(tmp_path / "nope.pth"))
    proc = subprocess.run(cmd, env=run_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "nope.pth: --load-from checkpoint is missing" in proc.stderr
    assert not (tmp_path / "final.pth").exists()
