"""Ensemble test-time augmentation of Cascade Mask R-CNN models (SPEC section 6).

mmdet 3.3's ``DetTTAModel`` refuses instance masks and merges finished
detections; the original solution (mmdet v1 ``aug_test`` as adopted from
amirassov/kaggle-imaterialist) merges *inside* the detector instead. This
module does that for N detectors (``CascadeRCNN`` with ``CascadeRoIHead``,
FPN, ``RPNHead``, ``FCNMaskHead``) and A augmentations per detector
(scales x horizontal flip). Per image:

1. RPN: every (model, augmentation) run proposes boxes with its own RPN test
   config; they are mapped back to the original image, concatenated, NMSed at
   ``rpn_nms`` (0.7, class-agnostic, so also across FPN levels) and the top
   ``rpn_max`` (1000) by score are kept (v1 ``merge_aug_proposals``).
2. Boxes: the shared proposals are mapped into each run's frame (scale, then
   flip); the 3 cascade stages run, the RoIs being re-regressed between
   stages (``regress_by_class`` with the argmax foreground class); the 3
   stages' class logits are averaged, softmaxed, and the boxes decoded with
   the last stage's deltas (clipped to the resized image); they are mapped
   back, and boxes and class probabilities are averaged arithmetically over
   all runs; then ``multiclass_nms`` (score > ``score_thr``, IoU
   ``nms_iou``, top ``max_per_img`` overall).
3. Masks: the final boxes are mapped into each run's frame; each stage's mask
   head gives a 28x28 sigmoid map for the detection's class; flipped runs'
   maps are un-flipped; all N x A x 3 maps are averaged, pasted into the box
   at the original image size (mmdet's ``_do_paste_mask``), thresholded
   (``>= mask_thr``, as mmdet 3.x's ``FCNMaskHead``; v1 used ``>``) and
   encoded as COCO compressed RLE (``counts`` bytes, Fortran order).

Detectors with the 2019 box convention (configs/released/*.py, the
original's released weights; ``legacy.uses_v1_boxes``) flip boxes as
x' = W - 1 - x, and an ensemble of only such detectors pastes masks as the
2019 ``get_seg_masks`` (``legacy.paste_masks_rle_v1``: integer box, cv2
resize, ``> mask_thr``).

Difference from mmdet 3.3's stock ``CascadeRCNN.predict`` with one model and
one augmentation: the stock RPN applies its NMS per FPN level only, while
step 1 re-applies a class-agnostic NMS over all levels. With
``rpn_nms=1.0`` (no suppression) the two coincide; everything else
(stage-averaged logits then softmax, averaged stage mask maps, paste,
threshold) is the same math.

The math lives in small functions (box mapping, proposal merge, cascade
forward, detection selection, mask maps, paste + RLE) so each is testable.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import mmcv
import numpy as np
import torch
import torch.nn.functional as F
from mmcv.ops import nms
from mmdet.models.layers import multiclass_nms
from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox2roi
from mmengine.model import BaseModule
from pycocotools import mask as mask_util
from torch import Tensor, nn

from oidseg.mmdet_ext.legacy import paste_masks_rle_v1, uses_v1_boxes

# Bytes of float32 pasted masks per chunk on a GPU (CPU pastes box regions only).
_GPU_PASTE_BYTES = 1 << 28


@dataclass(frozen=True)
class AugFrame:
    """Geometry of one augmentation: original -> resized (x ``scale_factor``)
    -> optionally flipped horizontally inside the resized image."""

    scale_factor: tuple[float, float]  # (w_scale, h_scale)
    img_shape: tuple[int, int]  # resized (h, w), before padding
    flip: bool
    # 1.0 for a detector with the 2019 "+1" box convention (inclusive pixel
    # boxes, flipped as x' = W - 1 - x, mmdet v1 ``bbox_flip``); else 0.0
    flip_offset: float = 0.0

    def to_frame(self, boxes: Tensor) -> Tensor:
        """Original-image xyxy boxes (n, 4k) -> this frame."""
        out = boxes.reshape(-1, 4) * boxes.new_tensor(self.scale_factor * 2)
        if self.flip:
            out = flip_boxes(out, self.img_shape[1] - self.flip_offset)
        return out.reshape(boxes.shape)

    def from_frame(self, boxes: Tensor) -> Tensor:
        """This frame's xyxy boxes (n, 4k) -> original image (un-flip, then un-scale)."""
        out = boxes.reshape(-1, 4)
        if self.flip:
            out = flip_boxes(out, self.img_shape[1] - self.flip_offset)
        out = out / out.new_tensor(self.scale_factor * 2)
        return out.reshape(boxes.shape)


def flip_boxes(boxes: Tensor, width: float) -> Tensor:
    """Horizontal flip of xyxy boxes (n, 4) inside an image of ``width``
    (mmdet's convention: x1' = W - x2, x2' = W - x1)."""
    out = boxes.clone()
    out[:, 0] = width - boxes[:, 2]
    out[:, 2] = width - boxes[:, 0]
    return out


def resize_keep_ratio(img: np.ndarray, scale: tuple[int, int]) -> tuple[np.ndarray, tuple[float, float]]:
    """mmdet ``Resize(scale, keep_ratio=True)``: the long side fits max(scale),
    the short side min(scale); bilinear (cv2). Returns the image and
    (w_scale, h_scale) = new size / old size per axis."""
    h, w = img.shape[:2]
    out = mmcv.imrescale(img, scale, interpolation="bilinear", backend="cv2")
    new_h, new_w = out.shape[:2]
    return out, (new_w / w, new_h / h)


def merge_proposals(boxes: Sequence[Tensor], scores: Sequence[Tensor], iou_thr: float, max_num: int) -> tuple[Tensor, Tensor]:
    """Concatenate proposals already mapped to the original image, NMS them
    (class-agnostic) and keep the ``max_num`` best by score (descending)."""
    all_boxes = torch.cat(list(boxes))
    all_scores = torch.cat(list(scores))
    if all_boxes.numel() == 0:
        return all_boxes.reshape(0, 4), all_scores.reshape(0)
    dets, _ = nms(all_boxes.contiguous(), all_scores.contiguous(), iou_thr)
    dets = dets[:max_num]  # mmcv's nms returns the kept boxes by descending score
    return dets[:, :4], dets[:, 4]


def cascade_forward(roi_head: nn.Module, feats: tuple[Tensor, ...], proposals: Tensor, img_meta: dict) -> tuple[Tensor, Tensor]:
    """Run the cascade's box stages on ``proposals`` (n, 4, this frame).

    Between stages the RoIs are re-regressed with the stage's deltas for the
    argmax foreground class. Returns the boxes decoded with the last stage's
    deltas, clipped to ``img_shape`` ((n, 4) for class-agnostic regression,
    (n, 4 * C) otherwise) and the softmax of the stage-averaged logits
    (n, C + 1, background last)."""
    rois = bbox2roi([proposals])
    logits = []
    bbox_pred = None
    for stage in range(roi_head.num_stages):
        out = roi_head._bbox_forward(stage, feats, rois)
        logits.append(out["cls_score"])
        bbox_pred = out["bbox_pred"]
        if stage < roi_head.num_stages - 1:
            head = roi_head.bbox_head[stage]
            labels = out["cls_score"][:, :-1].argmax(dim=1)
            refined = head.regress_by_class(rois[:, 1:], labels, bbox_pred, img_meta)
            rois = torch.cat([rois[:, :1], refined], dim=1)
    probs = F.softmax(sum(logits) / float(len(logits)), dim=-1)
    last = roi_head.bbox_head[-1]
    reg_dim = last.bbox_coder.encode_size
    per_roi = 1 if last.reg_class_agnostic else last.num_classes
    priors = rois[:, 1:].repeat_interleave(per_roi, dim=0)
    boxes = last.bbox_coder.decode(priors, bbox_pred.reshape(-1, reg_dim), max_shape=img_meta["img_shape"])
    return boxes.reshape(rois.shape[0], -1), probs


def select_detections(boxes: Tensor, probs: Tensor, score_thr: float, nms_iou: float, max_per_img: int) -> tuple[Tensor, Tensor, Tensor]:
    """mmdet ``multiclass_nms``: per class score > ``score_thr``, NMS at
    ``nms_iou``, the top ``max_per_img`` overall. Returns (boxes (k, 4),
    scores (k,), labels (k,))."""
    if boxes.shape[0] == 0:
        return boxes.new_zeros((0, 4)), boxes.new_zeros((0,)), boxes.new_zeros((0,), dtype=torch.long)
    dets, labels = multiclass_nms(boxes, probs, score_thr, dict(type="nms", iou_threshold=nms_iou), max_per_img)
    return dets[:, :4], dets[:, 4], labels


def stage_mask_maps(roi_head: nn.Module, feats: tuple[Tensor, ...], boxes: Tensor, labels: Tensor) -> Tensor:
    """Sigmoid mask maps (stages, k, M, M) of every cascade stage's mask
    head for the boxes (this frame) and their classes."""
    rois = bbox2roi([boxes])
    rows = torch.arange(boxes.shape[0], device=boxes.device)
    maps = []
    for stage in range(roi_head.num_stages):
        preds = roi_head._mask_forward(stage, feats, rois)["mask_preds"]
        channel = torch.zeros_like(labels) if roi_head.mask_head[stage].class_agnostic else labels
        maps.append(preds[rows, channel].sigmoid())
    return torch.stack(maps)


def paste_masks_rle(maps: Tensor, boxes: Tensor, height: int, width: int, thr: float) -> list[bytes]:
    """Paste (k, M, M) probability maps into their original-image boxes,
    threshold at ``>= thr`` and return COCO compressed RLE ``counts`` per
    mask (height x width, Fortran order)."""
    k = maps.shape[0]
    if k == 0:
        return []
    on_cpu = maps.device.type == "cpu"
    chunk = 1 if on_cpu else max(1, int(_GPU_PASTE_BYTES // (4 * height * width)))
    counts: list[bytes] = []
    for start in range(0, k, chunk):
        sl = slice(start, start + chunk)
        pasted, region = _do_paste_mask(maps[sl, None], boxes[sl], height, width, skip_empty=on_cpu)
        binary = (pasted >= thr).to(torch.uint8).cpu().numpy().transpose(1, 2, 0)
        full = np.zeros((height, width, binary.shape[2]), dtype=np.uint8, order="F")
        ys, xs = region if region else (slice(None), slice(None))
        full[ys, xs, :] = binary
        counts.extend(rle["counts"] for rle in mask_util.encode(full))
    return counts


@dataclass
class _Run:
    """One (model, augmentation): its detector, frame and cached features."""

    detector: nn.Module
    frame: AugFrame
    meta: dict
    feats: tuple[Tensor, ...]


@MODELS.register_module()
class OIDEnsembleTTA(BaseModule):
    """Ensemble + TTA of Cascade Mask R-CNN detectors (see module docstring).

    Args:
        detectors: built detectors or their config dicts; they must share the
            class list (same ``num_classes``).
        scales: mmdet ``Resize(scale, keep_ratio=True)`` scales, (long, short).
        flips: per scale, the flip states to run: ``(False,)`` no flip,
            ``(False, True)`` with flip, ``(True,)`` flip only.
        score_thr, nms_iou, max_per_img: final ``multiclass_nms``.
        mask_thr: binary mask threshold (``>=``).
        rpn_nms, rpn_max: proposal merge NMS IoU and count.
    """

    def __init__(
        self,
        detectors: Sequence[nn.Module | dict],
        scales: Sequence[Sequence[int]] = ((1333, 800),),
        flips: Sequence[bool] = (False,),
        score_thr: float = 0.0,
        nms_iou: float = 0.5,
        max_per_img: int = 120,
        mask_thr: float = 0.5,
        rpn_nms: float = 0.7,
        rpn_max: int = 1000,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        if not detectors:
            raise ValueError("OIDEnsembleTTA needs at least one detector")
        if not scales or not flips:
            raise ValueError("OIDEnsembleTTA needs at least one scale and one flip state")
        self.detectors = nn.ModuleList(MODELS.build(d) if isinstance(d, dict) else d for d in detectors)
        for det in self.detectors:
            _check_detector(det)
        num_classes = {det.roi_head.bbox_head[-1].num_classes for det in self.detectors}
        if len(num_classes) != 1:
            raise ValueError(f"ensemble detectors disagree on num_classes: {sorted(num_classes)}")
        self.num_classes = num_classes.pop()
        self.scales = [tuple(int(v) for v in s) for s in scales]
        self.flips = [bool(f) for f in flips]
        self.score_thr = float(score_thr)
        self.nms_iou = float(nms_iou)
        self.max_per_img = int(max_per_img)
        self.mask_thr = float(mask_thr)
        self.rpn_nms = float(rpn_nms)
        self.rpn_max = int(rpn_max)
        # all detectors with the 2019 box convention (the released weights):
        # masks pasted as the 2019 FCNMaskHead.get_seg_masks did
        self.v1_masks = all(uses_v1_boxes(det) for det in self.detectors)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def to(self, *args, **kwargs) -> "OIDEnsembleTTA":
        """Move the detectors through their own ``to`` (mmengine's BaseModel
        also moves its data preprocessor's target device, which a plain
        ``nn.Module.to`` of this wrapper would not)."""
        for det in self.detectors:
            det.to(*args, **kwargs)
        return super().to(*args, **kwargs)

    def _augmented_inputs(self, img: np.ndarray) -> Iterable[tuple[np.ndarray, AugFrame]]:
        """Each augmentation's image (resized, maybe flipped) and frame."""
        for scale in self.scales:
            resized, scale_factor = resize_keep_ratio(img, scale)
            for flip in self.flips:
                aug = np.ascontiguousarray(resized[:, ::-1]) if flip else resized
                yield aug, AugFrame(scale_factor, tuple(resized.shape[:2]), flip)

    def _prepare_runs(self, img: np.ndarray) -> list[_Run]:
        """Preprocess each augmentation with each detector's data
        preprocessor (normalisation, padding) and extract its features."""
        runs = []
        h, w = img.shape[:2]
        for aug, frame in self._augmented_inputs(img):
            tensor = torch.from_numpy(np.ascontiguousarray(aug.transpose(2, 0, 1)))
            for det in self.detectors:
                sample = DetDataSample(
                    metainfo=dict(
                        ori_shape=(h, w),
                        img_shape=frame.img_shape,
                        scale_factor=frame.scale_factor,
                        flip=frame.flip,
                        flip_direction="horizontal" if frame.flip else None,
                    )
                )
                data = det.data_preprocessor(dict(inputs=[tensor], data_samples=[sample]), training=False)
                sample = data["data_samples"][0]
                feats = det.extract_feat(data["inputs"])
                det_frame = replace(frame, flip_offset=1.0) if uses_v1_boxes(det) else frame
                runs.append(_Run(det, det_frame, sample.metainfo, feats))
        return runs

    def _proposals(self, runs: Sequence[_Run]) -> tuple[Tensor, Tensor]:
        boxes, scores = [], []
        for run in runs:
            sample = DetDataSample(metainfo=run.meta)
            props = run.detector.rpn_head.predict(run.feats, [sample], rescale=False)[0]
            boxes.append(run.frame.from_frame(props.bboxes))
            scores.append(props.scores)
        return merge_proposals(boxes, scores, self.rpn_nms, self.rpn_max)

    def _mean_boxes(self, runs: Sequence[_Run], proposals: Tensor) -> tuple[Tensor, Tensor]:
        box_sum = prob_sum = None
        for run in runs:
            boxes, probs = cascade_forward(run.detector.roi_head, run.feats, run.frame.to_frame(proposals), run.meta)
            boxes = run.frame.from_frame(boxes)
            box_sum = boxes if box_sum is None else box_sum + boxes
            prob_sum = probs if prob_sum is None else prob_sum + probs
        return box_sum / len(runs), prob_sum / len(runs)

    def _mean_mask_maps(self, runs: Sequence[_Run], boxes: Tensor, labels: Tensor) -> Tensor:
        map_sum, count = None, 0
        for run in runs:
            maps = stage_mask_maps(run.detector.roi_head, run.feats, run.frame.to_frame(boxes), labels)
            if run.frame.flip:
                maps = maps.flip(-1)
            map_sum = maps.sum(0) if map_sum is None else map_sum + maps.sum(0)
            count += maps.shape[0]
        return map_sum / count

    @torch.no_grad()
    def predict_image(self, img: np.ndarray, return_maps: bool = False) -> dict:
        """Detect on one BGR uint8 image (H, W, 3).

        Returns ``labels`` int64 (k,), ``scores`` float32 (k,), ``bboxes``
        float32 (k, 4) xyxy pixels of the original image, ``masks`` (k COCO
        RLE ``counts`` bytes at H x W), and with ``return_maps`` the averaged
        mask probability maps float32 (k, M, M) in box coordinates."""
        h, w = img.shape[:2]
        runs = self._prepare_runs(img)
        proposals, _ = self._proposals(runs)
        if proposals.shape[0] > 0:
            mean_boxes, mean_probs = self._mean_boxes(runs, proposals)
            boxes, scores, labels = select_detections(mean_boxes, mean_probs, self.score_thr, self.nms_iou, self.max_per_img)
        else:
            boxes, scores, labels = select_detections(proposals, proposals.new_zeros((0, self.num_classes + 1)), 0, 0, 0)
        if boxes.shape[0] > 0:
            maps = self._mean_mask_maps(runs, boxes, labels)
            paste = paste_masks_rle_v1 if self.v1_masks else paste_masks_rle
            masks = paste(maps, boxes, h, w, self.mask_thr)
        else:
            maps = boxes.new_zeros((0, 28, 28))
            masks = []
        out = dict(
            labels=labels.cpu().numpy().astype(np.int64),
            scores=scores.cpu().numpy().astype(np.float32),
            bboxes=boxes.cpu().numpy().astype(np.float32).reshape(-1, 4),
            masks=masks,
        )
        if return_maps:
            out["maps"] = maps.cpu().numpy().astype(np.float32)
        return out


def _check_detector(det: nn.Module) -> None:
    """The ensemble needs a two-stage detector with a cascade RoI head with
    masks and plain softmax classifiers."""
    roi_head = getattr(det, "roi_head", None)
    if getattr(det, "rpn_head", None) is None or roi_head is None or not hasattr(roi_head, "num_stages"):
        raise TypeError(f"{type(det).__name__}: OIDEnsembleTTA needs a CascadeRCNN-like detector (rpn_head + cascade roi_head)")
    if not getattr(roi_head, "with_mask", False):
        raise TypeError(f"{type(det).__name__}: OIDEnsembleTTA needs a mask head")
    if any(head.custom_cls_channels or head.custom_activation for head in roi_head.bbox_head):
        raise TypeError(f"{type(det).__name__}: OIDEnsembleTTA needs softmax classification heads")
