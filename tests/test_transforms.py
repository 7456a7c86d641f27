"""P1's image-only augmentations: they change the image, never boxes or masks."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from mmdet.structures.bbox import HorizontalBoxes
from mmdet.structures.mask import BitmapMasks

from oidseg.mmdet_ext.transforms import RandomBrightnessContrast, RandomCutOut, RandomJPEG


def sample_results(seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(30, 220, (48, 64, 3), dtype=np.uint8)
    masks = np.zeros((2, 48, 64), np.uint8)
    masks[0, 5:20, 5:30] = 1
    masks[1, 25:40, 30:60] = 1
    return {"img": img, "img_shape": (48, 64), "ori_shape": (48, 64),
            "gt_bboxes": HorizontalBoxes(np.array([[5, 5, 30, 20], [30, 25, 60, 40]], np.float32)),
            "gt_bboxes_labels": np.array([0, 1]), "gt_masks": BitmapMasks(masks, 48, 64)}


TRANSFORMS = [
    lambda p: RandomCutOut(prob=p, max_size=12),
    lambda p: RandomBrightnessContrast(prob=p, brightness=0.3, contrast=0.3),
    lambda p: RandomJPEG(prob=p, quality_range=(80, 99)),
]


@pytest.mark.parametrize("make", TRANSFORMS)
def test_image_only_and_probability(make):
    np.random.seed(0)
    before = sample_results()
    after = make(1.0).transform(copy.deepcopy(before))
    assert after["img"].shape == before["img"].shape and after["img"].dtype == np.uint8
    assert not np.array_equal(after["img"], before["img"])
    np.testing.assert_array_equal(after["gt_bboxes"].numpy(), before["gt_bboxes"].numpy())
    np.testing.assert_array_equal(after["gt_masks"].masks, before["gt_masks"].masks)
    np.testing.assert_array_equal(after["gt_bboxes_labels"], before["gt_bboxes_labels"])
    untouched = make(0.0).transform(copy.deepcopy(before))
    np.testing.assert_array_equal(untouched["img"], before["img"])


def test_probability_half_applies_about_half_the_time():
    np.random.seed(1)
    t = RandomJPEG(prob=0.5)
    img = sample_results()["img"]
    changed = sum(not np.array_equal(t.transform({"img": img.copy()})["img"], img)
                  for _ in range(200))
    assert 70 < changed < 130


def test_cutout_holes_are_at_most_max_size():
    np.random.seed(2)
    t = RandomCutOut(prob=1.0, max_size=12, fill=0)
    for _ in range(50):
        img = np.full((48, 64, 3), 200, np.uint8)
        out = t.transform({"img": img})["img"]
        ys, xs = np.nonzero((out == 0).all(axis=2))
        assert ys.size > 0
        assert ys.max() - ys.min() < 12 and xs.max() - xs.min() < 12
        # the hole is one filled rectangle
        assert ys.size == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)


def test_brightness_contrast_stays_in_range_and_is_affine():
    np.random.seed(3)
    t = RandomBrightnessContrast(prob=1.0, brightness=0.3, contrast=0.3)
    img = np.tile(np.arange(0, 250, 10, dtype=np.uint8)[None, :, None], (4, 1, 3))
    out = t.transform({"img": img.copy()})["img"].astype(float)
    assert out.min() >= 0 and out.max() <= 255
    inside = (out > 0) & (out < 255)
    x, y = img.astype(float)[inside], out[inside]
    alpha, beta = np.polyfit(x, y, 1)
    assert 0.7 - 0.01 <= alpha <= 1.3 + 0.01 and abs(beta) <= 0.3 * 255 + 1


def test_jpeg_quality_bounds_are_checked():
    with pytest.raises(ValueError):
        RandomJPEG(quality_range=(0, 99))
    with pytest.raises(ValueError):
        RandomJPEG(quality_range=(99, 80))


def test_photometric_pipeline_of_the_demo_config_runs(tmp_path):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from oidseg.mmdet_ext.dataset import OIDSegDataset, make_synthetic_dataset

    init_default_scope("mmdet")
    make_synthetic_dataset(str(tmp_path), n_images=2, n_classes=3, seed=0)
    cfg = Config.fromfile(str(Path(__file__).resolve().parents[1] / "configs/demo/P1.py"))
    assert [t["type"] for t in cfg.train_pipelines["photometric"]][2:5] == [
        "RandomCutOut", "RandomBrightnessContrast", "RandomJPEG"]
    ds = OIDSegDataset(ann_file=str(tmp_path / "ann.pkl"),
                       pipeline=cfg.train_pipelines["photometric"])
    out = ds[0]
    assert out["inputs"].shape[0] == 3
    assert max(out["inputs"].shape[1:]) <= 256
    assert len(out["data_samples"].gt_instances) == len(ds.get_data_info(0)["instances"])
