"""scripts/train.py on bad starting weights and bad images: a clear error
(exit 2) naming the file, no code run, no output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from oidseg.mmdet_ext.dataset import make_synthetic_dataset
from test_checkpoints import write_payload

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train.py"
CONFIG = ROOT / "configs" / "demo" / "L1.py"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    make_synthetic_dataset(str(root), n_images=4, n_classes=3, seed=0)
    np.save(root / "order.npy", np.arange(4).repeat(3))
    return root


def train(data, out, *extra):
    cmd = [sys.executable, str(SCRIPT), "--config", str(CONFIG), "--ann", str(data / "ann.pkl"),
           "--order", str(data / "order.npy"), "--iters", "2", "--work-dir", str(out / "work"),
           "--out", str(out / "final.pth"), "--log-jsonl", str(out / "log.jsonl"), "--threads", "2",
           *extra]
    return subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("option", ["--load-from", "--pretrained"])
def test_payload_in_starting_weights_is_refused(data, tmp_path, option):
    marker = tmp_path / "ran"
    evil = write_payload(tmp_path / "evil.pth", marker)
    proc = train(data, tmp_path, option, str(evil))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"error: {evil}: {option} checkpoint holds more than tensors" in proc.stderr
    assert "refused" in proc.stderr
    assert not marker.exists()
    assert not (tmp_path / "final.pth").exists()


def test_previous_stage_that_does_not_fit_is_a_clear_error(data, tmp_path):
    prev = tmp_path / "prev.pth"
    torch.save({"meta": {"dataset_meta": {"classes": ["/m/a"]}},
                "state_dict": {"backbone.conv1.weight": torch.zeros(16, 3, 7, 7),
                               "roi_head.old_head.weight": torch.zeros(3)}}, prev)
    proc = train(data, tmp_path, "--load-from", str(prev))
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: {prev}: weights do not fit the model of {CONFIG} (")
    assert "missing: " in error and "unexpected: roi_head.old_head.weight" in error
    assert not (tmp_path / "final.pth").exists()


def test_truncated_training_jpeg_is_a_clear_error(data, tmp_path):
    import pickle
    import shutil

    bad = tmp_path / "data"
    shutil.copytree(data, bad, ignore=shutil.ignore_patterns("work"))
    ann = pickle.loads((bad / "ann.pkl").read_bytes())
    for rec in ann["data_list"]:
        rec["img_path"] = str(bad / "images" / Path(rec["img_path"]).name)
        rec["mask_dir"] = str(bad / "masks")
    (bad / "ann.pkl").write_bytes(pickle.dumps(ann))
    jpeg = Path(ann["data_list"][1]["img_path"])
    jpeg.write_bytes(jpeg.read_bytes()[:300])  # header only
    proc = train(bad, tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: {jpeg}: training image {ann['data_list'][1]['img_id']} "
                            "cannot be decoded (truncated or corrupt)")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "final.pth").exists()
