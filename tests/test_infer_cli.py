"""scripts/infer.py end to end on 2 tiny images with randomly initialised
tiny Cascade Mask R-CNN checkpoints."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util

from oidseg.errors import InputError
from tiny_model import tiny_cascade_config

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "infer.py"
CLASSES = ["/m/a", "/m/b", "/m/c"]


def _load_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("oidseg_scripts_infer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


infer_cli = _load_script()


def _save_model(tmp: Path, name: str, classes: list[str], seed: int) -> tuple[str, str]:
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import save_checkpoint
    from mmdet.registry import MODELS

    init_default_scope("mmdet")
    cfg = tiny_cascade_config(num_classes=7)  # the checkpoint's class list must override this
    config_path = tmp / f"{name}.py"
    Config(cfg_dict=cfg.to_dict()).dump(str(config_path))
    model_cfg = tiny_cascade_config(num_classes=len(classes))["model"]
    torch.manual_seed(seed)
    model = MODELS.build(model_cfg)
    ckpt_path = tmp / f"{name}.pth"
    save_checkpoint({"state_dict": model.state_dict(), "meta": {"dataset_meta": {"classes": classes}}},
                    str(ckpt_path))
    return str(config_path), str(ckpt_path)


def _image_list(tmp: Path, sizes: list[tuple[int, int]], missing: set[int] = frozenset()) -> Path:
    records = []
    for i, (w, h) in enumerate(sizes):
        path = tmp / f"img{i}.jpg"
        if i not in missing:
            rng = np.random.default_rng(i)
            img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            img[h // 4:h // 2, w // 5:w // 2] = (20, 200, 60)
            cv2.imwrite(str(path), img)
        records.append(dict(img_id=f"img{i:03d}", img_path=str(path), width=w, height=h, instances=[]))
    list_path = tmp / "shard.pkl"
    with open(list_path, "wb") as fh:
        pickle.dump({"metainfo": {"classes": CLASSES}, "data_list": records}, fh)
    return list_path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models")
    return [_save_model(tmp, "m1", CLASSES, 0), _save_model(tmp, "m2", CLASSES, 1)]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=600)


def test_cli_ensemble_with_tta_end_to_end(models, tmp_path):
    images = _image_list(tmp_path, [(120, 90), (96, 128)])
    out = tmp_path / "out" / "00.pkl"
    model_args = [a for cfg, ckpt in models for a in ("--model", cfg, ckpt)]
    proc = _run([*model_args, "--images", str(images), "--scales", "128x96", "--flip",
                 "--score-thr", "0", "--nms-iou", "0.5", "--max-per-img", "20", "--mask-thr", "0.5",
                 "--rpn-nms", "0.7", "--rpn-max", "100", "--out", str(out), "--device", "cpu", "--threads", "2"])
    assert proc.returncode == 0, proc.stderr
    assert "[2/2] img001" in proc.stderr
    with open(out, "rb") as fh:
        shard = pickle.load(fh)
    assert shard["format"] == "oidseg-detections/1"
    assert shard["classes"] == CLASSES
    assert [r["img_id"] for r in shard["images"]] == ["img000", "img001"]
    for rec, (w, h) in zip(shard["images"], [(120, 90), (96, 128)]):
        n = len(rec["scores"])
        assert (rec["width"], rec["height"]) == (w, h)
        assert 0 < n <= 20
        assert rec["labels"].dtype == np.int64 and rec["labels"].max() < len(CLASSES)
        assert rec["scores"].dtype == np.float32 and rec["bboxes"].dtype == np.float32
        assert rec["bboxes"].shape == (n, 4) and len(rec["masks"]) == n
        assert all(isinstance(c, bytes) for c in rec["masks"])
        decoded = mask_util.decode([{"size": [h, w], "counts": c} for c in rec["masks"]])
        assert decoded.shape == (h, w, n)
    assert list(out.parent.iterdir()) == [out]  # no temp file left


def test_cli_missing_image_fails_and_writes_nothing(models, tmp_path):
    images = _image_list(tmp_path, [(120, 90), (96, 128)], missing={1})
    out = tmp_path / "out" / "00.pkl"
    cfg, ckpt = models[0]
    proc = _run(["--model", cfg, ckpt, "--images", str(images), "--out", str(out), "--device", "cpu"])
    assert proc.returncode != 0
    assert "img1.jpg" in proc.stderr and "img001" in proc.stderr
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_unreadable_image_fails_and_writes_nothing(models, tmp_path):
    images = _image_list(tmp_path, [(120, 90), (96, 128)])
    (tmp_path / "img1.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out.pkl"
    cfg, ckpt = models[0]
    with pytest.raises(InputError, match="img1.jpg"):
        infer_cli.main(["--model", cfg, ckpt, "--images", str(images), "--scales", "128x96",
                        "--out", str(out), "--device", "cpu"])
    assert not out.exists()
    assert not list(tmp_path.glob(".out.pkl.*"))


def test_empty_image_list_gives_empty_shard(models, tmp_path):
    images = _image_list(tmp_path, [])
    out = tmp_path / "empty.pkl"
    cfg, ckpt = models[0]
    infer_cli.main(["--model", cfg, ckpt, "--images", str(images), "--out", str(out), "--device", "cpu"])
    with open(out, "rb") as fh:
        shard = pickle.load(fh)
    assert shard == {"format": "oidseg-detections/1", "classes": CLASSES, "images": []}


def test_models_with_different_classes_are_refused(models, tmp_path):
    other = _save_model(tmp_path, "other", ["/m/a", "/m/b", "/m/x"], 2)
    images = _image_list(tmp_path, [(120, 90)])
    with pytest.raises(InputError, match="class list"):
        infer_cli.main(["--model", *models[0], "--model", *other, "--images", str(images),
                        "--out", str(tmp_path / "o.pkl"), "--device", "cpu"])


def test_image_size_must_match_the_list(models, tmp_path):
    images = _image_list(tmp_path, [(120, 90)])
    data = pickle.loads(images.read_bytes())
    data["data_list"][0]["width"] = 121
    images.write_bytes(pickle.dumps(data))
    with pytest.raises(InputError, match="img000.*120x90.*121x90"):
        infer_cli.main(["--model", *models[0], "--images", str(images), "--out", str(tmp_path / "o.pkl"),
                        "--device", "cpu"])


def test_checkpoint_that_does_not_fit_the_config_is_refused(models, tmp_path):
    from mmengine.runner import save_checkpoint

    cfg, ckpt = models[0]
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    state["state_dict"]["roi_head.extra.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    save_checkpoint(state, str(bad))
    images = _image_list(tmp_path, [(120, 90)])
    with pytest.raises(InputError, match="bad.pth: weights do not fit"):
        infer_cli.main(["--model", cfg, str(bad), "--images", str(images), "--out", str(tmp_path / "o.pkl"),
                        "--device", "cpu"])
