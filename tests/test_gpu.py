"""The GPU path (issue 11, item 4): run by bench/gpu_check.sh on a machine
with CUDA; every test skips cleanly without one.

- the demo leaf ensemble (3 models x 4 augmentations) gives on the GPU the
  detections it gives on the CPU, within float tolerance;
- a demo training stage runs on the GPU, in fp32 and with --amp;
- the torchrun path (--dist-backend nccl, one GPU) trains a stage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train.py"
NUM_CLASSES = 3


def _image(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 90, (height, width, 3), dtype=np.uint8)
    img[10:80, 8:70] = (200, 40, 40)
    img[60:150, 90:200] = (30, 220, 90)
    img[5:40, width - 60:width - 5] = (250, 250, 20)
    return img


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def test_demo_ensemble_on_gpu_equals_cpu():
    from mmengine.registry import init_default_scope

    import oidseg.mmdet_ext  # noqa: F401
    from oidseg.infer import build_model_from_config
    from oidseg.mmdet_ext.ensemble import OIDEnsembleTTA

    init_default_scope("mmdet")
    detectors = []
    for i, name in enumerate(("L1", "L2", "L3")):
        torch.manual_seed(i)
        detectors.append(build_model_from_config(ROOT / "configs" / "demo" / f"{name}.py", NUM_CLASSES))
    ensemble = OIDEnsembleTTA(detectors, scales=[(256, 154), (307, 184)], flips=(False, True),
                              score_thr=0.0, nms_iou=0.5, max_per_img=120, mask_thr=0.5,
                              rpn_nms=0.7, rpn_max=1000).eval()
    img = _image(320, 240)
    with torch.no_grad():
        cpu = ensemble.predict_image(img, return_maps=True)
        gpu = ensemble.to("cuda").predict_image(img, return_maps=True)
    assert ensemble.device.type == "cuda"
    assert len(cpu["scores"]) > 10
    assert abs(len(gpu["scores"]) - len(cpu["scores"])) <= max(2, len(cpu["scores"]) // 20)
    # random weights give near-ties; each of the CPU's top detections must have
    # its GPU twin (same class, same box and score within float tolerance)
    top = np.argsort(-cpu["scores"])[:50]
    iou = _box_iou(cpu["bboxes"][top], gpu["bboxes"])
    matched, max_map_diff = 0, 0.0
    for row, i in enumerate(top):
        ok = ((iou[row] > 0.98) & (gpu["labels"] == cpu["labels"][i])
              & (np.abs(gpu["scores"] - cpu["scores"][i]) < 1e-3))
        if ok.any():
            matched += 1
            j = int(np.flatnonzero(ok)[0])
            max_map_diff = max(max_map_diff, float(np.abs(gpu["maps"][j] - cpu["maps"][i]).max()))
    assert matched >= 0.9 * len(top), f"{matched}/{len(top)} CPU detections found on the GPU"
    assert max_map_diff < 1e-2


def test_demo_ensemble_with_amp_on_gpu():
    """inference.amp on CUDA: float16 autocast through the demo leaf ensemble
    (L2/L3's deformable convolutions included), float32 results; the float32
    run's best boxes are found with AMP (box IoU > 0.9; random weights give
    near-tied class scores, so the class is not compared)."""
    from mmengine.registry import init_default_scope

    import oidseg.mmdet_ext  # noqa: F401
    from oidseg.infer import build_model_from_config
    from oidseg.mmdet_ext.ensemble import OIDEnsembleTTA

    init_default_scope("mmdet")
    detectors = []
    for i, name in enumerate(("L1", "L2", "L3")):
        torch.manual_seed(i)
        detectors.append(build_model_from_config(ROOT / "configs" / "demo" / f"{name}.py", NUM_CLASSES))
    params = dict(scales=[(256, 154), (307, 184)], flips=(False, True), score_thr=0.0, nms_iou=0.5,
                  max_per_img=120, mask_thr=0.5, rpn_nms=0.7, rpn_max=1000)
    img = _image(320, 240)
    plain = OIDEnsembleTTA(detectors, **params).to("cuda").eval()
    amp = OIDEnsembleTTA(detectors, amp=True, **params).to("cuda").eval()
    assert amp.amp_dtype == torch.float16
    with torch.no_grad():
        ref = plain.predict_image(img)
        got = amp.predict_image(img)
    assert got["scores"].dtype == np.float32 and np.isfinite(got["bboxes"]).all()
    assert abs(len(got["scores"]) - len(ref["scores"])) <= max(2, len(ref["scores"]) // 10)
    top = np.argsort(-ref["scores"])[:20]
    iou = _box_iou(ref["bboxes"][top], got["bboxes"])
    found = int((iou.max(axis=1) > 0.9).sum())
    assert found >= 0.8 * len(top), f"{found}/{len(top)} float32 boxes found with AMP"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from oidseg.mmdet_ext.dataset import make_synthetic_dataset

    root = tmp_path_factory.mktemp("gpu_shapes")
    make_synthetic_dataset(str(root), n_images=8, n_classes=NUM_CLASSES, seed=0)
    np.save(root / "order.npy", np.arange(64) % 8)
    return root


def _train(data, out: Path, *extra) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), "--config", str(ROOT / "configs" / "demo" / "L1.py"),
           "--ann", str(data / "ann.pkl"), "--order", str(data / "order.npy"), "--iters", "6",
           "--work-dir", str(out / "work"), "--out", str(out / "final.pth"),
           "--log-jsonl", str(out / "log.jsonl"), "--log-interval", "1", *extra]
    proc = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["iter"] for e in log] == list(range(1, 7))
    assert all(np.isfinite(e["loss"]) for e in log)
    assert "device=cuda" in proc.stderr
    ckpt = torch.load(out / "final.pth", weights_only=True)
    assert ckpt["meta"]["iter"] == 6
    assert all(v.device.type == "cpu" for v in ckpt["state_dict"].values())
    return proc


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "amp"])
def test_demo_stage_trains_on_gpu(data, tmp_path, amp):
    proc = _train(data, tmp_path, *(["--amp"] if amp else []))
    if amp:
        assert "AmpOptimWrapper" in proc.stderr


def test_torchrun_path_with_one_gpu(data, tmp_path):
    proc = _train(data, tmp_path, "--gpus", "1", "--dist-backend", "nccl")
    assert "torch.distributed.run" in proc.stderr and "--launcher pytorch" in proc.stderr
    assert "Distributed training: True" in proc.stderr
