"""Merge's two mask IoU routes: pycocotools' C mask API through ctypes (only
for the pycocotools version it was written against) and the public
``pycocotools.mask.iou`` fallback keep the same detections."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

import oidseg.kaggle as kaggle
from oidseg.kaggle import encode_mask
from oidseg.postprocess import RleSet, mask_nms, merge_predictions


@pytest.fixture
def pycocotools_version(monkeypatch):
    """Set the pycocotools version coco_c_api sees; the cache is cleared
    before and after."""

    def set_version(value: str) -> None:
        monkeypatch.setattr(kaggle, "version", lambda name: value)
        kaggle.coco_c_api.cache_clear()

    kaggle.coco_c_api.cache_clear()
    yield set_version
    monkeypatch.undo()
    kaggle.coco_c_api.cache_clear()


def random_masks(rng, n: int, h: int, w: int) -> list[np.ndarray]:
    """Rectangles, half of them shifted copies of another (IoU near 0.5)."""
    masks = []
    for k in range(n):
        if k % 2 and masks:
            src = masks[rng.integers(len(masks))]
            dy, dx = rng.integers(-3, 4, size=2)
            m = np.roll(src, (dy, dx), axis=(0, 1))
        else:
            y0, x0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
            y1, x1 = rng.integers(y0 + 1, h + 1), rng.integers(x0 + 1, w + 1)
            m = np.zeros((h, w), np.uint8)
            m[y0:y1, x0:x1] = 1
        if not m.any():
            m[0, 0] = 1
        masks.append(m)
    return masks


def counts_of(mask: np.ndarray) -> bytes:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"]


def reference_keep(labels, scores, masks, thr) -> list[int]:
    """Greedy NMS from the whole IoU matrix: per class by descending score
    (ties: input order), drop what overlaps a kept one by IoU >= thr."""
    rles = [{"size": list(m.shape), "counts": counts_of(m)} for m in masks]
    iou = np.asarray(mask_utils.iou(rles, rles, [0] * len(rles)))
    kept: list[int] = []
    for k in sorted(range(len(masks)), key=lambda k: (-scores[k], k)):
        if all(labels[m] != labels[k] or iou[m, k] < thr for m in kept):
            kept.append(k)
    return sorted(kept)


def test_c_api_is_bound_only_for_the_pinned_pycocotools(pycocotools_version):
    if kaggle.version("pycocotools") != kaggle.COCO_C_API_VERSION:
        pytest.skip("the installed pycocotools is not the pinned one")
    pycocotools_version(kaggle.COCO_C_API_VERSION)
    assert kaggle.coco_c_api() is not None
    counts = [counts_of(m) for m in random_masks(np.random.default_rng(0), 4, 9, 11)]
    with RleSet(counts, 9, 11) as rles:
        assert rles.pairwise
    pycocotools_version("2.0.12")
    assert kaggle.coco_c_api() is None
    with RleSet(counts, 9, 11) as rles:
        assert not rles.pairwise


@pytest.mark.parametrize("n,classes", [(60, 3), (300, 2)])  # 300: over 255 masks a call
def test_both_routes_keep_what_greedy_nms_keeps(n, classes):
    rng = np.random.default_rng(n)
    h, w = 16, 21
    masks = random_masks(rng, n, h, w)
    labels = [f"/m/c{k}" for k in rng.integers(0, classes, size=n)]
    scores = np.round(rng.random(n), 1)  # many ties
    expected = reference_keep(labels, scores, masks, 0.5)
    assert 0 < len(expected) < n
    counts = [counts_of(m) for m in masks]
    for use_c in (True, False):
        with RleSet(counts, h, w, use_c=use_c) as rles:
            assert rles.pairwise is use_c
            assert mask_nms(labels, scores, rles, 0.5).tolist() == expected


def test_merge_falls_back_to_the_public_route(pycocotools_version):
    rng = np.random.default_rng(3)
    h, w = 12, 17
    masks = random_masks(rng, 40, h, w)
    labels = [f"/m/c{k}" for k in rng.integers(0, 2, size=40)]
    triples = [f"{c} {s:.6f} {encode_mask(counts_of(m))}"
               for c, s, m in zip(labels, rng.random(40), masks)]
    inputs = [" ".join(triples[:25]), " ".join(triples[25:])]
    c_route = merge_predictions(inputs, w, h, iou_thr=0.5, score_thr=0.0)
    pycocotools_version("1.0.0")  # another pycocotools: no C binding
    public_route = merge_predictions(inputs, w, h, iou_thr=0.5, score_thr=0.0)
    assert public_route == c_route
    assert 0 < public_route.count(" ") // 3 + 1 < 40

