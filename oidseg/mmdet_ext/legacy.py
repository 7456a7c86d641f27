"""The 2019 (mmdetection v1, "0.6.0") box conventions, for the original's
released weights (configs/released/*.py load this module via
``custom_imports``).

mmdet 3.3 ships most of what is needed: ``LegacyAnchorGenerator`` (anchors
centred at (stride - 1) / 2, "+1" sizes, rounded corners: the 2019
``AnchorGenerator.gen_base_anchors``), ``LegacyDeltaXYWHBBoxCoder`` (its
``encode`` is the 2019 ``bbox2delta``) and ``RoIAlign(aligned=False)``. Two
pieces differ from the 2019 code, and are replaced here:

- ``V1DeltaXYWHBBoxCoder``: mmdet 3.3's ``legacy_delta2bbox`` leaves out the
  2019 ``delta2bbox``'s ``+ 0.5`` / ``- 0.5`` on the decoded corners
  (mmdet/core/bbox/transforms.py of the original: ``x1 = gx - gw * 0.5 +
  0.5``, ``x2 = gx + gw * 0.5 - 0.5``; mmdet's comment says the shortcut
  scores ~0.5 box AP better on 1.x models). This coder decodes exactly as
  the 2019 code; its encoding is the legacy one.
- ``V1RoIExtractor``: the 2019 ``SingleRoIExtractor.map_roi_levels`` uses
  ``sqrt((x2 - x1 + 1) * (y2 - y1 + 1))`` and the 2019 RoIAlign kernel
  (ops/roi_align/src/roi_align_kernel.cu) pools up to ``(x2 + 1) * scale``;
  mmcv's ``RoIAlign(aligned=False)`` pools up to ``x2 * scale``. This
  extractor maps levels with the "+1" sizes and hands its RoIAlign layers
  boxes whose right/bottom edges are moved by +1 pixel. (Remaining
  difference: mmcv clamps a RoI's pooled width to >= 1 feature pixel, the
  2019 kernel to >= 0; it matters only for boxes narrower than the stride.)
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch
from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
from mmdet.models.task_modules.coders import LegacyDeltaXYWHBBoxCoder
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.structures.bbox import get_box_tensor
from torch import Tensor, nn


def v1_delta2bbox(rois: Tensor, deltas: Tensor, means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
                  stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0), max_shape: Optional[Sequence[int]] = None,
                  wh_ratio_clip: float = 16 / 1000) -> Tensor:
    """The 2019 ``delta2bbox``: rois (N, 4), deltas (N, 4k) -> boxes (N, 4k)."""
    means_t = deltas.new_tensor(means).repeat(1, deltas.size(1) // 4)
    stds_t = deltas.new_tensor(stds).repeat(1, deltas.size(1) // 4)
    d = deltas * stds_t + means_t
    dx, dy, dw, dh = d[:, 0::4], d[:, 1::4], d[:, 2::4], d[:, 3::4]
    max_ratio = float(np.abs(np.log(wh_ratio_clip)))
    dw = dw.clamp(min=-max_ratio, max=max_ratio)
    dh = dh.clamp(min=-max_ratio, max=max_ratio)
    px = ((rois[:, 0] + rois[:, 2]) * 0.5).unsqueeze(1).expand_as(dx)
    py = ((rois[:, 1] + rois[:, 3]) * 0.5).unsqueeze(1).expand_as(dy)
    pw = (rois[:, 2] - rois[:, 0] + 1.0).unsqueeze(1).expand_as(dw)
    ph = (rois[:, 3] - rois[:, 1] + 1.0).unsqueeze(1).expand_as(dh)
    gw, gh = pw * dw.exp(), ph * dh.exp()
    gx, gy = px + pw * dx, py + ph * dy
    x1, y1 = gx - gw * 0.5 + 0.5, gy - gh * 0.5 + 0.5
    x2, y2 = gx + gw * 0.5 - 0.5, gy + gh * 0.5 - 0.5
    if max_shape is not None:
        x1 = x1.clamp(min=0, max=max_shape[1] - 1)
        y1 = y1.clamp(min=0, max=max_shape[0] - 1)
        x2 = x2.clamp(min=0, max=max_shape[1] - 1)
        y2 = y2.clamp(min=0, max=max_shape[0] - 1)
    return torch.stack([x1, y1, x2, y2], dim=-1).view_as(deltas)


@TASK_UTILS.register_module()
class V1DeltaXYWHBBoxCoder(LegacyDeltaXYWHBBoxCoder):
    """``LegacyDeltaXYWHBBoxCoder`` whose ``decode`` is the 2019
    ``delta2bbox`` exactly (with the +-0.5 corner terms)."""

    def decode(self, bboxes, pred_bboxes: Tensor, max_shape: Optional[Union[Sequence[int], Tensor]] = None,
               wh_ratio_clip: Optional[float] = 16 / 1000):
        bboxes = get_box_tensor(bboxes)
        assert pred_bboxes.size(0) == bboxes.size(0)
        if max_shape is not None and isinstance(max_shape, Tensor):
            max_shape = max_shape.tolist()
        decoded = v1_delta2bbox(bboxes, pred_bboxes, self.means, self.stds, max_shape, wh_ratio_clip)
        if self.use_box_type:
            from mmdet.structures.bbox import HorizontalBoxes

            decoded = HorizontalBoxes(decoded)
        return decoded


class _V1RoIAlign(nn.Module):
    """mmcv ``RoIAlign(aligned=False)`` pooling [x1, x2 + 1) x [y1, y2 + 1)
    like the 2019 kernel (roi_end = (x2 + 1) * spatial_scale)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer
        self.output_size = layer.output_size

    def forward(self, feats: Tensor, rois: Tensor) -> Tensor:
        rois = rois.clone()
        rois[:, 3:5] += 1.0
        return self.layer(feats, rois)


@MODELS.register_module()
class V1RoIExtractor(SingleRoIExtractor):
    """``SingleRoIExtractor`` with the 2019 "+1" conventions (level mapping
    and RoIAlign end); use with ``roi_layer=dict(type='RoIAlign',
    sampling_ratio=2, aligned=False)``. It has no parameters."""

    def build_roi_layers(self, layer_cfg, featmap_strides) -> nn.ModuleList:
        layers = super().build_roi_layers(layer_cfg, featmap_strides)
        return nn.ModuleList([_V1RoIAlign(layer) for layer in layers])

    def map_roi_levels(self, rois: Tensor, num_levels: int) -> Tensor:
        scale = torch.sqrt((rois[:, 3] - rois[:, 1] + 1) * (rois[:, 4] - rois[:, 2] + 1))
        target_lvls = torch.floor(torch.log2(scale / self.finest_scale + 1e-6))
        return target_lvls.clamp(min=0, max=num_levels - 1).long()


def uses_v1_boxes(detector: nn.Module) -> bool:
    """True for a detector whose last box head decodes with the 2019 "+1"
    convention (mmdet's ``LegacyDeltaXYWHBBoxCoder`` or ours): its boxes are
    inclusive pixel boxes, flipped as x' = W - 1 - x."""
    roi_head = getattr(detector, "roi_head", None)
    heads = getattr(roi_head, "bbox_head", None)
    if heads is None:
        return False
    last = heads[-1] if isinstance(heads, nn.ModuleList) else heads
    return isinstance(getattr(last, "bbox_coder", None), LegacyDeltaXYWHBBoxCoder)


def paste_masks_rle_v1(maps: Tensor, boxes: Tensor, height: int, width: int, thr: float,
                       timings=None) -> list[bytes]:
    """The 2019 ``FCNMaskHead.get_seg_masks`` paste: each (M, M) probability
    map is resized (cv2 bilinear) to its integer box ``int(x1)..int(x1) + w``
    with ``w = int(x2) - int(x1) + 1`` (likewise y), thresholded with ``>
    thr`` and placed into a height x width image; COCO compressed RLE
    ``counts`` per mask (Fortran order), as ``ensemble.paste_masks_rle``.
    mmdet 3's ``_do_paste_mask`` samples the map over the float box instead
    (about 0.93 mean mask IoU between the two on random 8-300 px boxes).
    ``timings`` (an ``ensemble.Timings``) gets the seconds of the RLE
    encoding (``encode``)."""
    import time

    import cv2
    from pycocotools import mask as mask_util

    probs = maps.detach().float().cpu().numpy()
    ints = boxes.detach().cpu().numpy().astype(np.int32)
    counts: list[bytes] = []
    for prob, (x1, y1, x2, y2) in zip(probs, ints):
        w, h = max(int(x2 - x1 + 1), 1), max(int(y2 - y1 + 1), 1)
        full = np.zeros((height, width), dtype=np.uint8, order="F")
        region = full[y1:y1 + h, x1:x1 + w]
        binary = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR) > thr
        region[...] = binary[: region.shape[0], : region.shape[1]]
        start = time.perf_counter()
        counts.append(mask_util.encode(np.asfortranarray(full[:, :, None]))[0]["counts"])
        if timings is not None:
            timings.add("encode", time.perf_counter() - start)
    return counts
