"""scripts/infer.py end to end on 2 tiny images with randomly initialised
tiny Cascade Mask R-CNN checkpoints."""

from __future__ import annotations

import os
import pickle
import re
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


# --- the pipelined loop (issue 19 item 5) ------------------------------------

def _infer_args(models, images, out, *extra) -> list[str]:
    model_args = [a for cfg, ckpt in models for a in ("--model", cfg, ckpt)]
    return [*model_args, "--images", str(images), "--scales", "128x96", "--max-per-img", "20",
            "--rpn-max", "100", "--out", str(out), "--device", "cpu", "--threads", "1", *extra]


def test_pipelined_loop_is_byte_identical_to_the_serial_loop(models, tmp_path, capsys):
    """Reading ahead and encoding behind the networks (--prefetch N) gives
    the serial loop's (--prefetch 0) shard byte for byte; every image's log
    line has its read / model / masks / encode seconds, the last line the
    images per second."""
    images = _image_list(tmp_path, [(120, 90), (96, 128), (128, 96), (100, 100)])
    shards = {}
    for prefetch in (0, 2):
        out = tmp_path / f"prefetch{prefetch}.pkl"
        infer_cli.main(_infer_args(models[:1], images, out, "--flip", "--prefetch", str(prefetch)))
        shards[prefetch] = out.read_bytes()
        log = capsys.readouterr().err
        assert ("serial (prefetch 0)" if prefetch == 0 else f"prefetch {prefetch}") in log
        lines = [line for line in log.splitlines() if line.startswith("[")]
        assert [line.split("]")[0] for line in lines] == [f"[{i}/4" for i in range(1, 5)]
        assert all(re.search(r"read [0-9.]+, model [0-9.]+, masks [0-9.]+, encode [0-9.]+", line)
                   for line in lines), lines
        assert re.search(r"4 images in [0-9.]+ s \([0-9.]+ images/s\)", log)
    assert shards[0] == shards[2]
    assert len(pickle.loads(shards[0])["images"]) == 4


@pytest.mark.parametrize("prefetch", ["0", "2"])
def test_unreadable_image_stops_either_loop(models, tmp_path, prefetch):
    images = _image_list(tmp_path, [(120, 90), (96, 128), (128, 96)])
    (tmp_path / "img1.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out.pkl"
    with pytest.raises(InputError, match="img1.jpg / img001"):
        infer_cli.main(_infer_args(models[:1], images, out, "--prefetch", prefetch))
    assert not out.exists() and not list(tmp_path.glob(".out.pkl.*"))


@pytest.mark.parametrize("option", [("--prefetch", "-1"), ("--prefetch", "two"), ("--threads", "0")])
def test_pipeline_options_are_range_checked(models, tmp_path, capsys, option):
    images = _image_list(tmp_path, [(120, 90)])
    with pytest.raises(SystemExit) as exc:
        infer_cli.main(_infer_args(models[:1], images, tmp_path / "o.pkl", *option))
    assert exc.value.code == 2
    assert option[0] in capsys.readouterr().err


def test_amp_flag_is_logged_and_gives_a_complete_shard(models, tmp_path, capsys):
    """--amp: bfloat16 autocast on a CPU with bf16 instructions (else float32,
    said in the log); the shard has the same images and fields."""
    from oidseg.mmdet_ext.ensemble import amp_dtype

    images = _image_list(tmp_path, [(120, 90)])
    out = tmp_path / "amp.pkl"
    infer_cli.main(_infer_args(models[:1], images, out, "--amp"))
    log = capsys.readouterr().err
    expected = "autocast bfloat16" if amp_dtype("cpu") is not None else "float32 (--amp: cpu has no fast"
    assert expected in log
    shard = pickle.loads(out.read_bytes())
    assert [r["img_id"] for r in shard["images"]] == ["img000"]
    rec = shard["images"][0]
    assert rec["scores"].dtype == np.float32 and rec["bboxes"].dtype == np.float32
    assert len(rec["masks"]) == len(rec["scores"]) > 0
