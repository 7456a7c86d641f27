"""OIDEnsembleTTA (SPEC section 6) against mmdet's own Cascade Mask R-CNN
predict, flip handling, ensemble averaging, empty results, determinism.

All on a tiny randomly initialised model (fixed seed) and ~128 px images.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
from torch import nn
from mmengine.registry import init_default_scope
from pycocotools import mask as mask_util

from tiny_model import tiny_cascade_config
from oidseg.mmdet_ext.ensemble import (
    AugFrame,
    OIDEnsembleTTA,
    flip_boxes,
    merge_proposals,
    resize_keep_ratio,
    stage_mask_maps,
)

torch.set_num_threads(2)
NUM_CLASSES = 3


@pytest.fixture(scope="module")
def detector():
    from mmdet.registry import MODELS

    init_default_scope("mmdet")
    torch.manual_seed(0)
    return MODELS.build(tiny_cascade_config(NUM_CLASSES)["model"]).eval()


def _image(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Noise plus a few bright rectangles (BGR uint8), not left-right symmetric."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 90, (height, width, 3), dtype=np.uint8)
    img[10:50, 8:40] = (200, 40, 40)
    img[40:90, 60:120] = (30, 220, 90)
    img[5:30, width - 30:width - 5] = (250, 250, 20)
    return img


def _decode(counts: list[bytes], height: int, width: int) -> np.ndarray:
    if not counts:
        return np.zeros((0, height, width), dtype=bool)
    rles = [{"size": [height, width], "counts": c} for c in counts]
    return mask_util.decode(rles).transpose(2, 0, 1).astype(bool)


def _ensemble(detectors, **kw) -> OIDEnsembleTTA:
    params = dict(scales=[(128, 96)], flips=(False,), score_thr=0.0, nms_iou=0.5, max_per_img=120,
                  mask_thr=0.5, rpn_nms=0.7, rpn_max=100)
    params.update(kw)
    return OIDEnsembleTTA(detectors, **params).eval()


# --- small functions -------------------------------------------------------

def test_aug_frame_round_trip_and_flip():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 5.0, 5.0]])
    frame = AugFrame(scale_factor=(2.0, 0.5), img_shape=(50, 200), flip=True)
    inside = frame.to_frame(boxes)
    # scaled x: 20..60 -> flipped in a 200 px wide image: 140..180
    assert torch.allclose(inside[0], torch.tensor([140.0, 10.0, 180.0, 30.0]))
    assert torch.allclose(frame.from_frame(inside), boxes)
    assert torch.equal(flip_boxes(flip_boxes(boxes, 77.0), 77.0), boxes)
    # (n, 4 * C) per-class boxes map per 4-tuple
    per_class = torch.cat([boxes, boxes + 1], dim=1)
    assert torch.allclose(frame.to_frame(per_class)[:, 4:], frame.to_frame(boxes + 1))


def test_resize_keep_ratio_matches_mmdet_resize():
    from mmdet.datasets.transforms import Resize

    img = _image(200, 150)
    out, factor = resize_keep_ratio(img, (128, 96))
    ref = Resize(scale=(128, 96), keep_ratio=True)(dict(img=img.copy(), img_shape=img.shape[:2]))
    assert np.array_equal(out, ref["img"])
    assert factor == pytest.approx(ref["scale_factor"])


def test_merge_proposals_nms_and_top_k():
    boxes = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]]),
             torch.tensor([[0.0, 0.0, 10.0, 10.5], [20.0, 20.0, 30.0, 30.0]])]
    scores = [torch.tensor([0.9, 0.3]), torch.tensor([0.95, 0.5])]
    merged, merged_scores = merge_proposals(boxes, scores, 0.7, 2)
    assert merged_scores.tolist() == pytest.approx([0.95, 0.5])  # 0.9 suppressed, 0.3 cut by top-2
    assert torch.equal(merged[0], boxes[1][0])


# --- against mmdet's stock predict -----------------------------------------

def _stock_predict(det, img, scale, rcnn_cfg):
    """mmdet's own test pipeline (Resize keep_ratio + PackDetInputs) and
    CascadeRCNN.predict(rescale=True)."""
    from mmcv.transforms import Compose

    pipeline = Compose([dict(type="mmdet.Resize", scale=scale, keep_ratio=True),
                        dict(type="mmdet.PackDetInputs",
                             meta_keys=("img_id", "ori_shape", "img_shape", "scale_factor"))])
    packed = pipeline(dict(img=img.copy(), img_id=0, img_shape=img.shape[:2], ori_shape=img.shape[:2]))
    data = det.data_preprocessor(dict(inputs=[packed["inputs"]], data_samples=[packed["data_samples"]]), False)
    saved = det.roi_head.test_cfg
    det.roi_head.test_cfg = rcnn_cfg
    try:
        with torch.no_grad():
            return det.predict(data["inputs"], data["data_samples"], rescale=True)[0].pred_instances
    finally:
        det.roi_head.test_cfg = saved


@pytest.mark.parametrize("size", [(160, 120), (128, 96)])
def test_single_model_single_aug_equals_mmdet_predict(detector, size):
    """One model, one scale, no flip: with rpn_nms=1.0 (no cross-level
    re-NMS of the proposals, which the stock RPN does not do) the module's
    detections are mmdet's CascadeRCNN.predict's."""
    from mmengine.config import ConfigDict

    img = _image(*size)
    ens = _ensemble([detector], rpn_nms=1.0, rpn_max=detector.rpn_head.test_cfg.max_per_img,
                    max_per_img=50)
    ours = ens.predict_image(img)
    stock = _stock_predict(detector, img, (128, 96), ConfigDict(
        score_thr=0.0, nms=dict(type="nms", iou_threshold=0.5), max_per_img=50, mask_thr_binary=0.5))
    assert len(ours["scores"]) == len(stock.scores) == 50
    np.testing.assert_array_equal(ours["labels"], stock.labels.numpy())
    np.testing.assert_allclose(ours["scores"], stock.scores.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["bboxes"], stock.bboxes.numpy(), rtol=1e-5, atol=1e-3)
    masks = _decode(ours["masks"], size[1], size[0])
    stock_masks = stock.masks.numpy()
    assert masks.shape == stock_masks.shape
    assert stock_masks.sum() > 0
    # pixels exactly at the 0.5 threshold may flip with float round-off
    assert (masks != stock_masks).sum() <= 0.0005 * masks.size


# --- flip -------------------------------------------------------------------

def test_flip_only_run_equals_flipped_detections_of_flipped_image(detector):
    """Image at its test scale (no resampling): the flip-only run of I must be
    the mirror image of the no-flip run of fliplr(I), which needs both the
    box and the mask un-flip."""
    img = _image(128, 96)
    width = img.shape[1]
    flipped_run = _ensemble([detector], flips=(True,)).predict_image(img, return_maps=True)
    plain_run = _ensemble([detector], flips=(False,)).predict_image(
        np.ascontiguousarray(img[:, ::-1]), return_maps=True)
    assert len(flipped_run["scores"]) == len(plain_run["scores"]) > 0
    np.testing.assert_array_equal(flipped_run["labels"], plain_run["labels"])
    np.testing.assert_allclose(flipped_run["scores"], plain_run["scores"], rtol=1e-5, atol=1e-6)
    expected_boxes = flip_boxes(torch.from_numpy(plain_run["bboxes"]), width).numpy()
    np.testing.assert_allclose(flipped_run["bboxes"], expected_boxes, atol=1e-3)
    # the maps are not symmetric, so a missing un-flip of the maps would fail here
    assert np.abs(plain_run["maps"] - plain_run["maps"][..., ::-1]).max() > 1e-3
    np.testing.assert_allclose(flipped_run["maps"], plain_run["maps"][..., ::-1], atol=1e-5)
    masks = _decode(flipped_run["masks"], 96, 128)
    expected = _decode(plain_run["masks"], 96, 128)[:, :, ::-1]
    assert (masks != expected).sum() <= 0.0005 * masks.size
    assert not np.array_equal(expected, _decode(plain_run["masks"], 96, 128))


def test_mask_maps_are_the_mean_over_runs_and_stages(detector):
    """With flips (False, True) the maps are the mean of the 2 x 3 stage maps,
    the flipped run's maps computed on the flipped boxes and un-flipped."""
    img = _image(128, 96, seed=3)
    boxes = torch.tensor([[10.0, 12.0, 60.0, 70.0], [70.0, 5.0, 120.0, 40.0]])
    labels = torch.tensor([0, 2])
    both = _ensemble([detector], flips=(False, True))
    with torch.no_grad():
        mean = both._mean_mask_maps(both._prepare_runs(img), boxes, labels)
        plain_run = _ensemble([detector], flips=(False,))._prepare_runs(img)[0]
        flip_run = _ensemble([detector], flips=(True,))._prepare_runs(img)[0]
        plain = stage_mask_maps(detector.roi_head, plain_run.feats, boxes, labels)
        flipped = stage_mask_maps(detector.roi_head, flip_run.feats, flip_boxes(boxes, 128), labels).flip(-1)
    assert plain.shape == (3, 2, 28, 28)
    torch.testing.assert_close(mean, torch.cat([plain, flipped]).mean(0), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(plain.mean(0), flipped.mean(0), atol=1e-3)


def test_multi_scale_flip_output_is_sorted_and_inside_the_image(detector):
    out = _ensemble([detector], flips=(False, True), scales=[(128, 96), (160, 120)]).predict_image(
        _image(160, 120, seed=3))
    assert 0 < len(out["scores"]) <= 120
    assert np.all(np.diff(out["scores"]) <= 0)
    assert out["bboxes"][:, [0, 2]].max() <= 160 + 1e-3 and out["bboxes"][:, [1, 3]].max() <= 120 + 1e-3
    assert out["bboxes"].min() >= -1e-3


# --- ensemble averaging -----------------------------------------------------

def test_two_copies_of_a_model_equal_the_model_alone(detector):
    img = _image(160, 120, seed=1)
    kw = dict(scales=[(160, 120)], flips=(False, True))
    alone = _ensemble([detector], **kw).predict_image(img, return_maps=True)
    twice = _ensemble([detector, copy.deepcopy(detector)], **kw).predict_image(img, return_maps=True)
    assert len(alone["scores"]) > 0
    np.testing.assert_array_equal(twice["labels"], alone["labels"])
    np.testing.assert_allclose(twice["scores"], alone["scores"], rtol=1e-6)
    np.testing.assert_allclose(twice["bboxes"], alone["bboxes"], rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(twice["maps"], alone["maps"], atol=1e-6)
    assert twice["masks"] == alone["masks"]


def test_ensemble_of_different_models_differs_from_each(detector):
    from mmdet.registry import MODELS

    torch.manual_seed(1)
    other = MODELS.build(tiny_cascade_config(NUM_CLASSES)["model"]).eval()
    img = _image(128, 96, seed=2)
    first = _ensemble([detector]).predict_image(img)
    both = _ensemble([detector, other]).predict_image(img)
    assert not np.allclose(first["scores"][:10], both["scores"][:10])


def test_detectors_must_agree_on_classes(detector):
    from mmdet.registry import MODELS

    other = MODELS.build(tiny_cascade_config(NUM_CLASSES + 1)["model"])
    with pytest.raises(ValueError, match="num_classes"):
        OIDEnsembleTTA([detector, other])


# --- limits, empty results, determinism ------------------------------------

def test_score_threshold_one_gives_empty_record(detector):
    out = _ensemble([detector], score_thr=1.0).predict_image(_image(128, 96))
    assert out["labels"].shape == (0,) and out["labels"].dtype == np.int64
    assert out["scores"].shape == (0,) and out["scores"].dtype == np.float32
    assert out["bboxes"].shape == (0, 4) and out["bboxes"].dtype == np.float32
    assert out["masks"] == []


def test_max_per_img_holds(detector):
    out = _ensemble([detector], max_per_img=7).predict_image(_image(128, 96))
    assert len(out["scores"]) == len(out["masks"]) == 7
    rle = {"size": [96, 128], "counts": out["masks"][0]}
    assert mask_util.decode(rle).shape == (96, 128)


def test_cpu_results_are_deterministic(detector):
    img = _image(160, 120, seed=4)
    ens = _ensemble([detector], flips=(False, True))
    first = pickle.dumps(ens.predict_image(img))
    second = pickle.dumps(ens.predict_image(img))
    assert first == second


def test_to_moves_the_detectors_data_preprocessors(detector):
    """nn.Module.to alone would leave each detector's data preprocessor
    casting inputs to its old device (it breaks on a GPU)."""
    ens = _ensemble([copy.deepcopy(detector)])
    ens.detectors[0].data_preprocessor._device = torch.device("meta")
    assert ens.to(torch.device("cpu")) is ens
    assert ens.detectors[0].data_preprocessor.device == torch.device("cpu")


# --- detect / finish halves and mixed precision (issue 19 item 5) ------------

def test_detect_then_finish_is_predict_image(detector):
    img = _image(128, 96, seed=5)
    ens = _ensemble([detector])
    whole = pickle.dumps(ens.predict_image(img, return_maps=True))
    halves = pickle.dumps(ens.finish(ens.detect(img), return_maps=True))
    assert whole == halves


def test_finish_reports_mask_and_encode_seconds(detector):
    from oidseg.mmdet_ext.ensemble import Timings

    ens = _ensemble([detector])
    timings = Timings(model=1.0)
    out = ens.finish(ens.detect(_image(128, 96)), timings=timings)
    assert len(out["masks"]) > 0
    assert set(timings) == {"model", "masks", "encode"}
    assert timings["masks"] >= 0 and timings["encode"] > 0


def test_amp_dtype_per_device():
    from oidseg.mmdet_ext.ensemble import amp_dtype

    assert amp_dtype("cuda") == torch.float16
    assert amp_dtype("cpu") in (torch.bfloat16, None)
    assert amp_dtype("meta") is None


def test_amp_off_changes_nothing_and_amp_on_stays_float32_outside_the_networks(detector):
    from oidseg.mmdet_ext.ensemble import amp_dtype

    img = _image(128, 96, seed=6)
    plain = _ensemble([detector])
    off = _ensemble([detector], amp=False)
    assert pickle.dumps(plain.predict_image(img)) == pickle.dumps(off.predict_image(img))
    if amp_dtype("cpu") is None:
        pytest.skip("this CPU has no bfloat16 instructions: --amp runs float32 here")
    on = _ensemble([copy.deepcopy(detector)], amp=True)
    assert on.amp_dtype == torch.bfloat16
    det = on.detect(img)
    assert det.maps.dtype == det.boxes.dtype == det.scores.dtype == torch.float32
    out = on.finish(det)
    assert len(out["scores"]) == len(out["masks"]) > 0
    assert np.isfinite(out["scores"]).all() and np.isfinite(out["bboxes"]).all()


def test_deformable_convolution_runs_float32_under_cpu_autocast():
    """mmcv's CPU deformable convolution has no bfloat16 kernel: under --amp
    it runs in float32 (same result as without autocast)."""
    from mmcv.ops import DeformConv2dPack

    from oidseg.mmdet_ext.ensemble import _deform_convs_float32_on_cpu

    torch.manual_seed(0)
    layer = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), DeformConv2dPack(8, 8, 3, padding=1)).eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        ref = layer(x)
        _deform_convs_float32_on_cpu(layer)
        assert torch.equal(layer(x), ref)  # without autocast: unchanged
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x)
    assert out.dtype == torch.float32
    assert torch.allclose(out, ref, atol=0.1)
