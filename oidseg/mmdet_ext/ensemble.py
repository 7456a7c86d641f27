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

Mixed precision (``amp=True``): the networks (backbone + FPN, RPN convs,
box and mask heads) run under ``torch.autocast``, float16 on CUDA and
bfloat16 on a CPU that has bf16 instructions (:func:`amp_dtype`; elsewhere
the CPU stays in float32). Everything around them stays float32: the
features are cast back after the FPN (so RoIAlign samples float32 features
at float32 RoI coordinates), each head's outputs are cast to float32 before
the box decoding, the softmax, the averaging over runs, the NMS and the mask
paste. With ``amp=False`` nothing is cast and the results are bit-for-bit
those of the float32 code.

A prediction has two halves: :meth:`OIDEnsembleTTA.detect` (the networks,
the merge of runs, the NMS, the averaged mask maps: the device's work) and
:meth:`OIDEnsembleTTA.finish` (paste, threshold, COCO RLE: mostly CPU
work), so that a caller can run the second half of one image beside the
first half of the next (``oidseg.infer.detect_images``).

The math lives in small functions (box mapping, proposal merge, cascade
forward, detection selection, mask maps, paste + RLE) so each is testable.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, replace
from typing import Callable, ContextManager, Iterable, Sequence

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


def amp_dtype(device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of ``amp=True`` on ``device``: float16 on CUDA,
    bfloat16 on a CPU with bf16 instructions (AVX512-BF16 or AMX), else
    None (the CPU would emulate bfloat16, slower than float32)."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.float16
    if kind == "cpu":
        try:
            supported = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        except AttributeError:  # an older torch: no way to ask
            supported = False
        return torch.bfloat16 if supported else None
    return None


def _no_autocast() -> ContextManager:
    return contextlib.nullcontext()


def _as_float(t: Tensor) -> Tensor:
    """float32 (a no-op, the same tensor, when it already is)."""
    return t if t.dtype == torch.float32 else t.float()


def _float32_on_cpu(forward: Callable) -> Callable:
    """Wrap an mmcv deformable convolution's ``forward``: on the CPU under
    autocast it runs in float32 (mmcv's CPU kernels have no bfloat16); on
    CUDA (float16 kernels exist) and without autocast it is unchanged."""

    def run(x: Tensor, *args, **kwargs):
        if x.device.type == "cpu" and (torch.is_autocast_enabled("cpu") or x.dtype != torch.float32):
            with torch.autocast("cpu", enabled=False):
                return forward(_as_float(x), *args, **kwargs)
        return forward(x, *args, **kwargs)

    return run


def _deform_convs_float32_on_cpu(module: nn.Module) -> None:
    from mmcv.ops import DeformConv2d, ModulatedDeformConv2d

    for sub in module.modules():
        if isinstance(sub, (DeformConv2d, ModulatedDeformConv2d)) and not hasattr(sub, "_oid_float32_on_cpu"):
            sub.forward = _float32_on_cpu(sub.forward)
            sub._oid_float32_on_cpu = True


class Timings(dict):
    """Seconds per phase, summed (``add``), for the per-image log."""

    def add(self, name: str, seconds: float) -> None:
        self[name] = self.get(name, 0.0) + seconds


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


def cascade_forward(roi_head: nn.Module, feats: tuple[Tensor, ...], proposals: Tensor, img_meta: dict,
                    autocast: Callable[[], ContextManager] = _no_autocast) -> tuple[Tensor, Tensor]:
    """Run the cascade's box stages on ``proposals`` (n, 4, this frame).

    Between stages the RoIs are re-regressed with the stage's deltas for the
    argmax foreground class. Returns the boxes decoded with the last stage's
    deltas, clipped to ``img_shape`` ((n, 4) for class-agnostic regression,
    (n, 4 * C) otherwise) and the softmax of the stage-averaged logits
    (n, C + 1, background last). ``autocast`` wraps the heads' forward
    passes (mixed precision); their outputs are cast to float32."""
    rois = bbox2roi([proposals])
    logits = []
    bbox_pred = None
    for stage in range(roi_head.num_stages):
        with autocast():
            out = roi_head._bbox_forward(stage, feats, rois)
        cls_score = _as_float(out["cls_score"])
        logits.append(cls_score)
        bbox_pred = _as_float(out["bbox_pred"])
        if stage < roi_head.num_stages - 1:
            head = roi_head.bbox_head[stage]
            labels = cls_score[:, :-1].argmax(dim=1)
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


def stage_mask_maps(roi_head: nn.Module, feats: tuple[Tensor, ...], boxes: Tensor, labels: Tensor,
                    autocast: Callable[[], ContextManager] = _no_autocast) -> Tensor:
    """Sigmoid mask maps (stages, k, M, M) of every cascade stage's mask
    head for the boxes (this frame) and their classes (float32; ``autocast``
    wraps the heads' forward passes)."""
    rois = bbox2roi([boxes])
    rows = torch.arange(boxes.shape[0], device=boxes.device)
    maps = []
    for stage in range(roi_head.num_stages):
        with autocast():
            preds = roi_head._mask_forward(stage, feats, rois)["mask_preds"]
        preds = _as_float(preds)
        channel = torch.zeros_like(labels) if roi_head.mask_head[stage].class_agnostic else labels
        maps.append(preds[rows, channel].sigmoid())
    return torch.stack(maps)


def paste_masks_rle(maps: Tensor, boxes: Tensor, height: int, width: int, thr: float,
                    timings: Timings | None = None) -> list[bytes]:
    """Paste (k, M, M) probability maps into their original-image boxes,
    threshold at ``>= thr`` and return COCO compressed RLE ``counts`` per
    mask (height x width, Fortran order). ``timings`` gets the seconds of
    the RLE encoding (``encode``)."""
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
        start_encode = time.perf_counter()
        counts.extend(rle["counts"] for rle in mask_util.encode(full))
        if timings is not None:
            timings.add("encode", time.perf_counter() - start_encode)
    return counts


@dataclass
class _Run:
    """One (model, augmentation): its detector, frame and cached features."""

    detector: nn.Module
    frame: AugFrame
    meta: dict
    feats: tuple[Tensor, ...]


@dataclass
class Detections:
    """The first half of a prediction (:meth:`OIDEnsembleTTA.detect`): the
    final boxes, scores and labels and the averaged mask maps, still on the
    model's device; :meth:`OIDEnsembleTTA.finish` pastes and encodes them."""

    height: int
    width: int
    boxes: Tensor  # (k, 4) xyxy, original image
    scores: Tensor  # (k,)
    labels: Tensor  # (k,)
    maps: Tensor  # (k, M, M) float32 mask probabilities in box coordinates


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
        amp: run the networks under autocast (:func:`amp_dtype` of the
            device the ensemble is on when it predicts; float32 where that is
            None).
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
        amp: bool = False,
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
        self.amp = bool(amp)
        if self.amp:
            for det in self.detectors:
                _deform_convs_float32_on_cpu(det)
        # all detectors with the 2019 box convention (the released weights):
        # masks pasted as the 2019 FCNMaskHead.get_seg_masks did
        self.v1_masks = all(uses_v1_boxes(det) for det in self.detectors)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype in use: None without ``amp`` or where the
        device has no fast half-precision type (:func:`amp_dtype`)."""
        return amp_dtype(self.device) if self.amp else None

    def _autocast_factory(self) -> Callable[[], ContextManager]:
        dtype = self.amp_dtype
        if dtype is None:
            return _no_autocast
        kind = self.device.type
        return lambda: torch.autocast(device_type=kind, dtype=dtype)

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

    def _prepare_runs(self, img: np.ndarray,
                      autocast: Callable[[], ContextManager] = _no_autocast) -> list[_Run]:
        """Preprocess each augmentation with each detector's data
        preprocessor (normalisation, padding) and extract its features
        (float32, also under autocast)."""
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
                with autocast():
                    feats = det.extract_feat(data["inputs"])
                feats = tuple(_as_float(f) for f in feats)
                det_frame = replace(frame, flip_offset=1.0) if uses_v1_boxes(det) else frame
                runs.append(_Run(det, det_frame, sample.metainfo, feats))
        return runs

    def _proposals(self, runs: Sequence[_Run],
                   autocast: Callable[[], ContextManager] = _no_autocast) -> tuple[Tensor, Tensor]:
        """Each run's RPN proposals (``rpn_head.predict``: the convs under
        ``autocast``, the decoding and NMS in float32), merged."""
        boxes, scores = [], []
        for run in runs:
            with autocast():
                outs = run.detector.rpn_head(run.feats)
            outs = tuple([_as_float(t) for t in level] for level in outs)
            props = run.detector.rpn_head.predict_by_feat(*outs, batch_img_metas=[run.meta], rescale=False)[0]
            boxes.append(run.frame.from_frame(props.bboxes))
            scores.append(props.scores)
        return merge_proposals(boxes, scores, self.rpn_nms, self.rpn_max)

    def _mean_boxes(self, runs: Sequence[_Run], proposals: Tensor,
                    autocast: Callable[[], ContextManager] = _no_autocast) -> tuple[Tensor, Tensor]:
        box_sum = prob_sum = None
        for run in runs:
            boxes, probs = cascade_forward(run.detector.roi_head, run.feats, run.frame.to_frame(proposals), run.meta,
                                           autocast)
            boxes = run.frame.from_frame(boxes)
            box_sum = boxes if box_sum is None else box_sum + boxes
            prob_sum = probs if prob_sum is None else prob_sum + probs
        return box_sum / len(runs), prob_sum / len(runs)

    def _mean_mask_maps(self, runs: Sequence[_Run], boxes: Tensor, labels: Tensor,
                        autocast: Callable[[], ContextManager] = _no_autocast) -> Tensor:
        map_sum, count = None, 0
        for run in runs:
            maps = stage_mask_maps(run.detector.roi_head, run.feats, run.frame.to_frame(boxes), labels, autocast)
            if run.frame.flip:
                maps = maps.flip(-1)
            map_sum = maps.sum(0) if map_sum is None else map_sum + maps.sum(0)
            count += maps.shape[0]
        return map_sum / count

    @torch.no_grad()
    def detect(self, img: np.ndarray) -> Detections:
        """The networks' half of :meth:`predict_image` on one BGR uint8 image
        (H, W, 3): final boxes, scores, labels and averaged mask maps, on
        the model's device."""
        h, w = img.shape[:2]
        autocast = self._autocast_factory()
        runs = self._prepare_runs(img, autocast)
        proposals, _ = self._proposals(runs, autocast)
        if proposals.shape[0] > 0:
            mean_boxes, mean_probs = self._mean_boxes(runs, proposals, autocast)
            boxes, scores, labels = select_detections(mean_boxes, mean_probs, self.score_thr, self.nms_iou, self.max_per_img)
        else:
            boxes, scores, labels = select_detections(proposals, proposals.new_zeros((0, self.num_classes + 1)), 0, 0, 0)
        if boxes.shape[0] > 0:
            maps = self._mean_mask_maps(runs, boxes, labels, autocast)
        else:
            maps = boxes.new_zeros((0, 28, 28))
        return Detections(h, w, boxes, scores, labels, maps)

    @torch.no_grad()
    def finish(self, det: Detections, return_maps: bool = False, timings: Timings | None = None) -> dict:
        """The masks' half of :meth:`predict_image`: paste, threshold and
        encode the maps of :meth:`detect`; ``timings`` gets the seconds of
        pasting (``masks``) and of the RLE encoding (``encode``)."""
        start = time.perf_counter()
        local = Timings()
        if det.boxes.shape[0] > 0:
            if self.v1_masks:
                masks = paste_masks_rle_v1(det.maps, det.boxes, det.height, det.width, self.mask_thr, local)
            else:
                masks = paste_masks_rle(det.maps, det.boxes, det.height, det.width, self.mask_thr, local)
        else:
            masks = []
        out = dict(
            labels=det.labels.cpu().numpy().astype(np.int64),
            scores=det.scores.cpu().numpy().astype(np.float32),
            bboxes=det.boxes.cpu().numpy().astype(np.float32).reshape(-1, 4),
            masks=masks,
        )
        if return_maps:
            out["maps"] = det.maps.cpu().numpy().astype(np.float32)
        if timings is not None:
            encode = local.get("encode", 0.0)
            timings.add("masks", time.perf_counter() - start - encode)
            timings.add("encode", encode)
        return out

    @torch.no_grad()
    def predict_image(self, img: np.ndarray, return_maps: bool = False) -> dict:
        """Detect on one BGR uint8 image (H, W, 3): :meth:`detect`, then
        :meth:`finish`.

        Returns ``labels`` int64 (k,), ``scores`` float32 (k,), ``bboxes``
        float32 (k, 4) xyxy pixels of the original image, ``masks`` (k COCO
        RLE ``counts`` bytes at H x W), and with ``return_maps`` the averaged
        mask probability maps float32 (k, M, M) in box coordinates."""
        return self.finish(self.detect(img), return_maps=return_maps)


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
