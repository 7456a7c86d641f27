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
    lambda p: RandomCutOut(prob=p, n_holes=2, hole_size=(12, 12)),
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


def test_cutout_is_albumentations_cutout_with_the_originals_arguments():
    # the original: Cutout(max_h_size=64, p=0.5); albumentations 0.x defaults
    # num_holes=8, max_w_size=8, fill 0 -> 8 holes of exactly 64 rows x 8 columns
    t = RandomCutOut()
    assert (t.prob, t.n_holes, t.hole_size, t.fill) == (0.5, 8, (64, 8), 0)
    # each hole: centre (cy, cx) uniform in 0..H x 0..W (inclusive), rows
    # cy-32 .. cy+32 and columns cx-4 .. cx+4 (end exclusive), clipped
    np.random.seed(4)
    height, width = 300, 400
    holes = [hole for _ in range(400) for hole in t.holes(height, width)]
    assert len(holes) == 3200
    y1, y2, x1, x2 = np.array(holes).T
    inside = (y1 > 0) & (y2 < height) & (x1 > 0) & (x2 < width)
    assert (y2 - y1)[inside].tolist() == [64] * int(inside.sum())
    assert (x2 - x1)[inside].tolist() == [8] * int(inside.sum())
    assert y1.min() == 0 and y2.max() == height and x1.min() == 0 and x2.max() == width
    assert ((y2 - y1 >= 0) & (y2 - y1 <= 64) & (x2 - x1 >= 0) & (x2 - x1 <= 8)).all()
    # the holes are what transform fills (fill 0), 8 per image
    np.random.seed(5)
    t = RandomCutOut(prob=1.0)
    img = np.full((height, width, 3), 200, np.uint8)
    state = np.random.get_state()
    out = t.transform({"img": img.copy()})["img"]
    np.random.set_state(state)
    np.random.rand()  # the probability draw
    expected = img.copy()
    for a, b, c, d in t.holes(height, width):
        expected[a:b, c:d] = 0
    np.testing.assert_array_equal(out, expected)
    filled = (out == 0).all(axis=2)
    assert 0 < filled.sum() <= 8 * 64 * 8


def test_cutout_rejects_bad_parameters():
    with pytest.raises(ValueError):
        RandomCutOut(hole_size=(0, 8))
    with pytest.raises(ValueError):
        RandomCutOut(n_holes=0)


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
    assert [t["type"] for t in cfg.train_pipelines["photometric"]][2:6] == [
        "RandomCutOut", "RandomBrightnessContrast", "RandomJPEG", "RandomChoiceResize"]
    ds = OIDSegDataset(ann_file=str(tmp_path / "ann.pkl"),
                       pipeline=cfg.train_pipelines["photometric"])
    out = ds[0]
    assert out["inputs"].shape[0] == 3
    assert max(out["inputs"].shape[1:]) <= 256
    assert len(out["data_samples"].gt_instances) == len(ds.get_data_info(0)["instances"])


def test_p1_later_stages_pick_one_of_two_scales():
    # the original's _parent_lr5 / _parent_lr50: img_scale=[(1333, 640), (1333, 960)]
    # without multiscale_mode='range' -> one of the two scales per image
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmdet.registry import TRANSFORMS as MMDET_TRANSFORMS

    init_default_scope("mmdet")
    root = Path(__file__).resolve().parents[1]
    cfg = Config.fromfile(str(root / "configs/models/P1.py"))
    resize = [t for t in cfg.train_pipelines["photometric"] if "Resize" in t["type"]]
    assert len(resize) == 1 and resize[0]["type"] == "RandomChoiceResize"
    assert [tuple(s) for s in resize[0]["scales"]] == [(1333, 640), (1333, 960)]
    assert resize[0]["keep_ratio"] is True
    cutout = next(t for t in cfg.train_pipelines["photometric"] if t["type"] == "RandomCutOut")
    assert (cutout["n_holes"], tuple(cutout["hole_size"]), cutout["prob"]) == (8, (64, 8), 0.5)
    # the leaf models' multiscale stays a range
    assert [t["type"] for t in cfg.train_pipelines["multiscale"]][2] == "RandomResize"
    # a 400 x 300 image comes out with short side 640 or 960 only (keep ratio,
    # long side at most 1333): 853 x 640 or 1280 x 960
    np.random.seed(6)
    step = MMDET_TRANSFORMS.build(resize[0])
    shapes = set()
    for _ in range(40):
        res = sample_results()
        res["img"] = np.zeros((300, 400, 3), np.uint8)
        res["img_shape"] = res["ori_shape"] = (300, 400)
        res["gt_masks"] = BitmapMasks(np.zeros((2, 300, 400), np.uint8), 300, 400)
        out = step.transform(res)
        assert out["gt_masks"].masks.shape[1:] == out["img"].shape[:2]  # mmdet's Resize
        shapes.add(out["img"].shape[:2])
    assert shapes == {(640, 853), (960, 1280)}


def test_training_mask_png_of_another_size_is_resized_at_pixel_centres(tmp_path):
    # A 2 x 2 PNG with pixel (1, 1) set, for a 3 x 3 image: output x takes input
    # floor((x + 0.5) * 2 / 3) = 0, 1, 1 -> rows/cols 1-2 are set (4 pixels),
    # the metric's convention; cv2.INTER_NEAREST (floor(x * 2 / 3) = 0, 0, 1)
    # would give pixel (2, 2) alone.
    import cv2

    from oidseg.mmdet_ext.transforms import read_binary_mask

    path = tmp_path / "m.png"
    cv2.imwrite(str(path), np.array([[0, 0], [0, 255]], np.uint8))
    got = read_binary_mask(str(path), 3, 3)
    assert got.tolist() == [[0, 0, 0], [0, 1, 1], [0, 1, 1]]
