"""Merge's mask NMS through pycocotools' public ``mask.iou`` (one call per
image and class over the candidate pairs' masks) keeps exactly what a plain
greedy NMS over the whole IoU matrix keeps."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from oidseg.postprocess import RleSet, mask_nms


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


@pytest.mark.parametrize("n,classes", [(60, 3), (300, 2)])  # 300: over 255 masks a call
def test_mask_nms_keeps_what_greedy_nms_keeps(n, classes):
    rng = np.random.default_rng(n)
    h, w = 16, 21
    masks = random_masks(rng, n, h, w)
    labels = [f"/m/c{k}" for k in rng.integers(0, classes, size=n)]
    scores = np.round(rng.random(n), 1)  # many ties
    expected = reference_keep(labels, scores, masks, 0.5)
    assert 0 < len(expected) < n
    counts = [counts_of(m) for m in masks]
    assert mask_nms(labels, scores, RleSet(counts, h, w), 0.5).tolist() == expected
