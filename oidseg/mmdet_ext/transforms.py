"""Pipeline transforms: lazy mask loading and P1's image-only augmentation.

- ``LoadOIDAnnotations``: boxes and labels from the record (mmdet's
  ``LoadAnnotations``) and the instance masks read lazily from their PNGs
  (``mask_dir/mask_file``). Open Images mask PNGs are NOT the image's size
  (SPEC section 2): each is binarised (> 0) and resized, nearest neighbour
  sampled at pixel centres, to the loaded image's width x height.
- ``RandomCutOut``, ``RandomBrightnessContrast``, ``RandomJPEG``: the
  image-only augmentation of P1's stages 2/3 (SPEC section 5): cutout p 0.5
  with albumentations 0.x ``Cutout`` defaults (8 holes of 64 x 8 px),
  brightness/contrast 0.3 p 0.5, JPEG re-encoding at quality 80..99 p 0.5.
  Boxes and masks are untouched.

Randomness comes from numpy's global generator, which mmengine seeds per
process and per dataloader worker (``randomness.seed``).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmdet.datasets.transforms import LoadAnnotations
from mmdet.registry import TRANSFORMS
from mmdet.structures.mask import BitmapMasks
from mmengine import fileio

from oidseg.errors import InputError


#: mask PNGs of another size than their image: nearest neighbour sampled at
#: pixel centres (output x <- input floor((x + 0.5) * in / out)), the
#: convention of the metric's ground truth (oidseg.metric.MASK_RESIZE)
MASK_RESIZE = cv2.INTER_NEAREST_EXACT


def read_binary_mask(path: str, height: int, width: int,
                     backend_args: dict | None = None) -> np.ndarray:
    """Read one mask PNG; binarise (> 0); resize (nearest at pixel centres)
    to ``height x width``.

    Returns a uint8 array of 0/1. A missing or undecodable file raises
    :class:`InputError` naming it.
    """
    try:
        data = fileio.get(path, backend_args=backend_args)
    except (FileNotFoundError, OSError) as exc:
        raise InputError(f"{path}: mask PNG is missing or unreadable ({exc})") from exc
    mask = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if mask is None or mask.size == 0:
        raise InputError(f"{path}: mask PNG cannot be decoded")
    if mask.ndim == 3:  # an RGB(A) mask: any non-zero channel is foreground
        mask = mask.max(axis=2)
    mask = (mask > 0).astype(np.uint8)
    if mask.shape != (height, width):
        mask = cv2.resize(mask, (width, height), interpolation=MASK_RESIZE)
    return mask


@TRANSFORMS.register_module()
class LoadOIDAnnotations(LoadAnnotations):
    """mmdet ``LoadAnnotations`` with masks from ``results['mask_dir']`` and
    each instance's ``mask_file`` (lazy: nothing is cached)."""

    def _load_masks(self, results: dict) -> None:
        height, width = results["ori_shape"]
        instances = results.get("instances", [])
        mask_dir = results.get("mask_dir")
        if instances and mask_dir is None:
            raise InputError(f"{results.get('img_id', results.get('img_path'))}: record has "
                             "instances but no mask_dir")
        masks = [
            read_binary_mask(str(Path(mask_dir) / inst["mask_file"]), height, width,
                             self.backend_args)
            for inst in instances
        ]
        stacked = np.stack(masks) if masks else np.zeros((0, height, width), np.uint8)
        results["gt_masks"] = BitmapMasks(stacked, height, width)


def _as_uint8(img: np.ndarray) -> np.ndarray:
    return img if img.dtype == np.uint8 else np.clip(img, 0, 255).astype(np.uint8)


@TRANSFORMS.register_module()
class RandomCutOut(BaseTransform):
    """albumentations 0.x ``Cutout`` (the original's ``Cutout(max_h_size=64,
    p=0.5)``, whose other arguments keep albumentations' defaults
    ``num_holes=8, max_w_size=8``, fill 0).

    With probability ``prob`` fill ``n_holes`` rectangles with ``fill``. Each
    hole has a centre ``(cy, cx)`` drawn uniformly from the integers 0..H and
    0..W (both ends inclusive, as ``random.randint``) and covers rows
    ``cy - h // 2 .. cy + h // 2`` and columns ``cx - w // 2 .. cx + w // 2``
    (end exclusive) clipped to the image, ``(h, w) = hole_size``: a FIXED
    size (despite albumentations' "max" names), 64 x 8 pixels by default.
    """

    def __init__(self, prob: float = 0.5, n_holes: int = 8,
                 hole_size: tuple[int, int] = (64, 8), fill: int = 0) -> None:
        h, w = (int(v) for v in hole_size)
        if not 0 <= prob <= 1 or n_holes < 1 or h < 1 or w < 1:
            raise ValueError(f"RandomCutOut: bad parameters prob={prob} "
                             f"n_holes={n_holes} hole_size={hole_size}")
        self.prob, self.n_holes, self.hole_size, self.fill = prob, n_holes, (h, w), fill

    def holes(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """``n_holes`` random holes ``(y1, y2, x1, x2)`` for an image of that size."""
        h, w = self.hole_size
        out = []
        for _ in range(self.n_holes):
            cy, cx = np.random.randint(0, height + 1), np.random.randint(0, width + 1)
            out.append((int(np.clip(cy - h // 2, 0, height)), int(np.clip(cy + h // 2, 0, height)),
                        int(np.clip(cx - w // 2, 0, width)), int(np.clip(cx + w // 2, 0, width))))
        return out

    def transform(self, results: dict) -> dict:
        if np.random.rand() >= self.prob:
            return results
        img = results["img"].copy()
        for y1, y2, x1, x2 in self.holes(*img.shape[:2]):
            img[y1:y2, x1:x2] = self.fill
        results["img"] = img
        return results

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(prob={self.prob}, n_holes={self.n_holes}, "
                f"hole_size={self.hole_size}, fill={self.fill})")


@TRANSFORMS.register_module()
class RandomBrightnessContrast(BaseTransform):
    """With probability ``prob``: ``img * alpha + beta`` with
    ``alpha = 1 + U(-contrast, contrast)`` and
    ``beta = 255 * U(-brightness, brightness)``, clipped to 0..255
    (the albumentations RandomBrightnessContrast rule)."""

    def __init__(self, prob: float = 0.5, brightness: float = 0.3,
                 contrast: float = 0.3) -> None:
        self.prob, self.brightness, self.contrast = prob, brightness, contrast

    def transform(self, results: dict) -> dict:
        if np.random.rand() >= self.prob:
            return results
        alpha = 1.0 + np.random.uniform(-self.contrast, self.contrast)
        beta = 255.0 * np.random.uniform(-self.brightness, self.brightness)
        img = results["img"]
        out = np.clip(img.astype(np.float32) * alpha + beta, 0, 255)
        results["img"] = out.astype(img.dtype) if img.dtype == np.uint8 else out
        return results

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(prob={self.prob}, brightness={self.brightness}, "
                f"contrast={self.contrast})")


@TRANSFORMS.register_module()
class RandomJPEG(BaseTransform):
    """With probability ``prob`` re-encode the image as JPEG at a quality
    uniform in ``quality_range`` (inclusive) and decode it again."""

    def __init__(self, prob: float = 0.5, quality_range: tuple[int, int] = (80, 99)) -> None:
        lo, hi = quality_range
        if not 1 <= lo <= hi <= 100:
            raise ValueError(f"RandomJPEG: bad quality_range {quality_range}")
        self.prob, self.quality_range = prob, (int(lo), int(hi))

    def transform(self, results: dict) -> dict:
        if np.random.rand() >= self.prob:
            return results
        quality = int(np.random.randint(self.quality_range[0], self.quality_range[1] + 1))
        img = results["img"]
        ok, buf = cv2.imencode(".jpg", _as_uint8(img), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError(f"RandomJPEG: JPEG encoding failed for {results.get('img_path')}")
        out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        if img.ndim == 3 and out.ndim == 2:
            out = out[:, :, None]
        results["img"] = out if img.dtype == np.uint8 else out.astype(img.dtype)
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prob={self.prob}, quality_range={self.quality_range})"
