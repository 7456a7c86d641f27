"""The Open Images Challenge 2019 instance-segmentation metric (SPEC section 8).

Same semantics as the TensorFlow Object Detection API's
``OpenImagesInstanceSegmentationChallengeEvaluator`` (tensorflow/models,
``research/object_detection``): mAP at mask IoU 0.5. Our own code, built on
pycocotools RLE operations (never a full-resolution mask per pair).

What TF does, and where (function names of tensorflow/models):

- Ground truth is expanded up the hierarchy beforehand
  (``dataset_tools/oid_hierarchical_labels_expansion.py``): every box/mask row
  is copied to each ancestor; positive image labels to ancestors, negative
  labels to descendants. Predictions are not expanded.
- ``metrics/oid_challenge_evaluation.py`` + ``merge_boxes_and_masks``: the
  (expanded) bbox CSV and the (expanded) masks are joined by
  ``pandas.merge(how='outer')`` on ImageID, LabelName, XMin, XMax, YMin,
  YMax, IsGroupOf: exact equality of the parsed floats; k box rows and m
  mask rows under one key give k x m ground-truth instances; a bbox row
  without a mask becomes a ground truth with an empty mask ("box-only"); a
  mask row without a bbox row is a ground truth with its mask and the mask
  row's box (IsGroupOf 0: the masks CSV has no such column, and the
  segmentation masks are of single objects); group-of rows are bbox rows
  with ``IsGroupOf=1``. The join comes AFTER the hierarchy expansion, as in
  the official instructions (boxes and masks expanded first), so a key of a
  parent class collects the rows of all its children (:func:`join_rows`,
  :func:`expand_ground_truth`).
- ``OpenImagesChallengeEvaluator.add_single_detected_image_info``: per image,
  only classes with an image-level label (either confidence) or a
  ground-truth box are evaluated; other detections are dropped.
- ``_decode_raw_data_into_masks_and_boxes`` / ``_to_normalized_box``: the
  detection box is the tight box of its mask, normalised
  ``[min / size, (max + 1) / size]``; ``PerImageEvaluation._remove_invalid_boxes``
  drops detections whose mask is empty (zero box).
- ``PerImageEvaluation._compute_tp_fp_for_single_class`` (mask mode), per image
  and class, detections sorted by descending score
  (``np_box_list_ops.sort_by_field``: ``np.argsort(scores)[::-1]``), in four
  passes over the detections:

  1. ``compute_match_iou`` on ground truth WITH a mask and not group-of: each
     detection takes the ground truth of highest mask IoU; IoU >= 0.5 and that
     ground truth not yet taken -> true positive; otherwise false positive (no
     fallback to the second best).
  2. ``compute_match_ioa`` on group-of ground truth WITH a mask: a detection
     not yet TP whose mask intersection over its own area with the best
     group-of mask is >= 0.5 is ignored.
  3. ``compute_match_iou`` on ground truth WITHOUT a mask (box-only), not
     group-of, by BOX IoU of the detection's tight box: a detection not yet TP
     nor ignored with IoU >= 0.5 on a not-yet-hit box is ignored
     (``is_matched_to_box``); a second hit of the same box stays a false
     positive.
  4. ``compute_match_ioa`` on group-of ground truth without a mask (the OID
     group-of boxes), by BOX intersection over the detection box's area
     >= 0.5: ignored. ``group_of_weight`` is 0 for the segmentation challenge,
     so group-of matches add nothing.

- ``ObjectDetectionEvaluation.add_single_ground_truth_image_info`` /
  ``_update_ground_truth_statistics``: the number of ground-truth instances of
  a class counts only non-group-of ground truth WITH a (non-empty) mask.
- ``ObjectDetectionEvaluation.evaluate`` + ``metrics.compute_precision_recall``
  + ``metrics.compute_average_precision``: per class, the per-image results
  (images in ImageID order) are concatenated, sorted by
  ``np.argsort(scores)[::-1]``, and AP is the VOC area under the monotone
  precision envelope; classes without ground truth get NaN and are left out;
  mAP = ``nanmean``.

Ties: TF sorts with numpy's default ``argsort`` and reverses it. We use the
stable ``argsort`` and reverse it, which is what TF gets whenever numpy's sort
is stable for the array at hand; among equal scores the later one (in
PredictionString order, then in ImageID order) comes first in each sort.

The instances of one image and class are in the order of that merge (pandas
sorts an outer merge's keys, then each key's box rows, each with its mask
rows in file order): it decides which ground truth a detection takes when two
have exactly the same IoU with it. (pandas before 2.2 ordered an outer
merge's keys by first appearance instead; only such exact ties could differ.)

Option (not the metric): ``join="tolerant"`` (``scripts/evaluate.py
--box-join tolerant``) pairs a mask row with a bbox row of the same image
and label whose coordinates agree within :data:`BOX_MATCH_TOLERANCE`, one to
one, closest first, whatever IsGroupOf (the official code's own comment
calls its exact-float join unstable and announces a merge on ImageID and
LabelName filtered by IoU instead). It shows how much a
file's last-digit differences or duplicated boxes move the score; the
ground-truth report in the scorer's log (:func:`report_ground_truth_files`,
:func:`_report_join`) counts both.

Memory: a submitted mask is kept as its zlib data (:class:`PackedRle`, the
size of the input) and inflated only while it is measured or matched, in
batches of at most :data:`EVAL_BATCH_CHARS` RLE characters (or one longer
mask): see :mod:`oidseg.validity` and the README's benchmark.
"""

from __future__ import annotations

import sys
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np
import pandas as pd
from pycocotools import mask as mask_utils

from oidseg.errors import InputError
from oidseg.hierarchy import Hierarchy
from oidseg import validity

#: IoU / IoA threshold of the challenge
MATCH_THRESHOLD = 0.5
#: largest |coordinate difference| for pairing a mask row with a bbox row
BOX_MATCH_TOLERANCE = 1e-5
#: nearest-neighbour resize sampled at pixel centres: output pixel x takes
#: input pixel floor((x + 0.5) * in / out), as PIL's and scikit-image's
#: nearest (the official evaluator's ground truth); cv2.INTER_NEAREST samples
#: floor(x * in / out), half a pixel off
MASK_RESIZE = cv2.INTER_NEAREST_EXACT
#: RLEs handed to pycocotools per call when computing boxes
_CHUNK = 65536
#: pycocotools 2.0.x ``area`` builds a uint8 array of the list length: more
#: than 255 RLEs per call overflow under numpy 2
_AREA_CHUNK = 255
#: RLE characters of detection masks inflated at once while measuring or
#: matching (a longer mask goes alone): about 5 bytes each in pycocotools
EVAL_BATCH_CHARS = 1 << 22
#: how bbox rows and mask rows become ground-truth instances (:func:`join_rows`)
JOINS = ("official", "tolerant")
#: the official join's key (``merge_boxes_and_masks``), in its order
JOIN_KEY = ["LabelName", "ImageID", "XMin", "XMax", "YMin", "YMax", "IsGroupOf"]

Rle = dict  # {"size": [h, w], "counts": bytes} (COCO compressed RLE)


class PackedRle:
    """A submitted mask as it came: zlib data of the COCO counts of an
    ``size = (h, w)`` mask (``length`` characters once inflated). Inflated
    only while it is measured or matched (:func:`unpack_rle`)."""

    __slots__ = ("size", "data", "length")

    def __init__(self, size: tuple[int, int], data: bytes, length: int):
        self.size = size  # (h, w): one tuple shared by an image's masks
        self.data = data
        self.length = length

    def unpack(self) -> Rle:
        # zlib.decompress ignores bytes after the stream, as the check did
        return {"size": list(self.size), "counts": zlib.decompress(self.data)}


def unpack_rle(rle) -> Rle:
    return rle.unpack() if isinstance(rle, PackedRle) else rle


def _rle_size(rle) -> tuple[int, int]:
    return rle.size if isinstance(rle, PackedRle) else tuple(rle["size"])


def _rle_length(rle) -> int:
    return rle.length if isinstance(rle, PackedRle) else len(rle["counts"])


def rle_batches(rles: Sequence, budget: int = EVAL_BATCH_CHARS) -> Iterable[slice]:
    """Consecutive slices of ``rles`` of at most ``budget`` RLE characters
    (a longer mask alone)."""
    lengths = [_rle_length(r) for r in rles]
    if sum(lengths) <= budget:
        yield slice(0, len(rles))
        return
    start, used = 0, 0
    for k, n in enumerate(lengths):
        if k > start and used + n > budget:
            yield slice(start, k)
            start, used = k, 0
        used += n
    if start < len(rles):
        yield slice(start, len(rles))


# --------------------------------------------------------------------------- data


@dataclass
class GroundTruth:
    """Ground truth of the evaluated images (optionally hierarchy-expanded).

    Instances (one row per box or mask) and image-level labels are flat
    arrays; ``inst_rle[i]`` is the mask at the image size or ``None``
    (box-only). Boxes are normalised ``[ymin, xmin, ymax, xmax]`` (TF order).
    """

    image_ids: np.ndarray  # sorted unique ImageIDs (object)
    heights: np.ndarray  # int64, 0 where unknown (image without annotations)
    widths: np.ndarray
    inst_image: np.ndarray  # int64 index into image_ids
    inst_label: np.ndarray  # object MIDs
    inst_box: np.ndarray  # float64 [n, 4]
    inst_group_of: np.ndarray  # bool
    inst_rle: list  # Rle | None
    label_image: np.ndarray  # int64 index into image_ids
    label_name: np.ndarray  # object MIDs
    label_confidence: np.ndarray  # int8 (1 verified present, 0 verified absent)
    expanded: bool = False
    #: the bbox and mask rows the instances were joined from (files read by
    #: :func:`load_ground_truth`): :func:`expand_ground_truth` expands these
    #: and joins again, as the official evaluator does
    rows: "AnnotationRows | None" = None

    def image_index(self, image_ids: Sequence[str]) -> np.ndarray:
        """Index of each ImageID in ``image_ids`` (-1 when not evaluated)."""
        return pd.Index(self.image_ids).get_indexer(pd.Index(np.asarray(image_ids, dtype=object)))


@dataclass
class Detections:
    """Flat detections; ``rle[i]`` (an :data:`Rle` or a :class:`PackedRle`)
    is at its image's ground-truth size."""

    image_id: np.ndarray  # object
    label: np.ndarray  # object MIDs
    score: np.ndarray  # float64
    rle: list  # Rle | PackedRle

    def __len__(self) -> int:
        return len(self.score)


@dataclass
class EvaluationResult:
    classes: list[str]
    average_precision: np.ndarray  # NaN where the class has no ground truth
    num_gt: np.ndarray  # ground truth counted in recall (non-group-of, with mask)
    num_scored: np.ndarray  # detections labelled TP or FP
    num_tp: np.ndarray
    num_images: int = 0
    extra: dict = field(default_factory=dict)
    #: per class, the precision and recall after each scored detection in
    #: descending score order (``metrics.compute_precision_recall``); empty
    #: arrays where the class has no ground truth
    precision: list = field(default_factory=list)
    recall: list = field(default_factory=list)

    @property
    def mean_ap(self) -> float:
        return self.mean_ap_over(self.classes)[0]

    def mean_ap_over(self, classes: Iterable[str]) -> tuple[float, int]:
        """(mean AP, number of scored classes) over a subset of classes."""
        index = pd.Index(self.classes).get_indexer(list(classes))
        index = index[index >= 0]
        values = self.average_precision[index]
        values = values[~np.isnan(values)]
        if values.size == 0:
            return float("nan"), 0
        return float(values.mean()), int(values.size)


# --------------------------------------------------------------------------- RLE helpers


def encode_mask(mask: np.ndarray) -> Rle:
    """Binary [h, w] array -> COCO compressed RLE (counts as bytes)."""
    return mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))


def rle_areas(rles: Sequence[Rle | None]) -> np.ndarray:
    """Mask areas (0 for ``None``), computed in chunks."""
    out = np.zeros(len(rles), dtype=np.int64)
    present = np.flatnonzero([r is not None for r in rles])
    for start in range(0, len(present), _AREA_CHUNK):
        part = present[start:start + _AREA_CHUNK]
        out[part] = mask_utils.area([rles[i] for i in part])
    return out


def rle_boxes(rles: Sequence[Rle]) -> np.ndarray:
    """Tight pixel boxes ``[x, y, w, h]`` of RLEs, computed in chunks."""
    out = np.zeros((len(rles), 4), dtype=np.float64)
    for start in range(0, len(rles), _CHUNK):
        chunk = list(rles[start:start + _CHUNK])
        if chunk:
            out[start:start + len(chunk)] = mask_utils.toBbox(chunk)
    return out


def measure_rles(rles: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """(areas, tight boxes ``[x, y, w, h]``) of :data:`Rle` /
    :class:`PackedRle` masks, inflated in :func:`rle_batches`."""
    areas = np.zeros(len(rles), dtype=np.int64)
    boxes = np.zeros((len(rles), 4), dtype=np.float64)
    for part in rle_batches(rles):
        batch = [unpack_rle(r) for r in rles[part]]
        areas[part] = rle_areas(batch)
        boxes[part] = rle_boxes(batch)
    return areas, boxes


def resize_rle(rle: Rle, height: int, width: int) -> Rle:
    """Nearest-neighbour resize of an RLE mask to ``height x width``, sampled
    at pixel centres (:data:`MASK_RESIZE`)."""
    mask = mask_utils.decode(rle)
    resized = cv2.resize(mask, (int(width), int(height)), interpolation=MASK_RESIZE)
    return encode_mask(resized > 0)


# --------------------------------------------------------------------------- TF box ops


def _box_intersection(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Pairwise intersection areas of ``[ymin, xmin, ymax, xmax]`` boxes
    (``np_box_ops.intersection``: heights times widths, in that order)."""
    ymin1, xmin1, ymax1, xmax1 = (boxes1[:, k:k + 1] for k in range(4))
    ymin2, xmin2, ymax2, xmax2 = (boxes2[:, k] for k in range(4))
    heights = np.maximum(0.0, np.minimum(ymax1, ymax2) - np.maximum(ymin1, ymin2))
    widths = np.maximum(0.0, np.minimum(xmax1, xmax2) - np.maximum(xmin1, xmin2))
    return heights * widths


def _box_area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """``np_box_ops.iou``: [n1, n2] intersection over union."""
    inter = _box_intersection(boxes1, boxes2)
    union = _box_area(boxes1)[:, None] + _box_area(boxes2)[None, :] - inter
    return inter / union


def box_ioa_of_first(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """[n1, n2] intersection over the area of ``boxes1`` (the detections):
    ``np.transpose(np_box_ops.ioa(groupof, detections))``."""
    return _box_intersection(boxes1, boxes2) / _box_area(boxes1)[:, None]


# --------------------------------------------------------------------------- matching


def _first_hits(eligible: np.ndarray, best: np.ndarray) -> np.ndarray:
    """Greedy one-to-one assignment in detection order: among ``eligible``
    detections, the first one pointing at each ground truth ``best[i]`` wins."""
    hits = np.zeros(len(best), dtype=bool)
    candidates = np.flatnonzero(eligible)
    if candidates.size:
        _, first = np.unique(best[candidates], return_index=True)
        hits[candidates[first]] = True
    return hits


def _best_mask_overlaps(
    det_rles: Sequence, instance_rles: list, group_rles: list
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per detection: the instance mask of highest IoU (index, IoU) and the
    highest intersection over the detection's area with a group-of mask
    (``mask_utils.iou`` with ``iscrowd`` 0 / 1). Detections are inflated in
    :func:`rle_batches`, never all at once."""
    n = len(det_rles)
    best = np.zeros(n, dtype=np.int64)
    best_iou = np.zeros(n, dtype=np.float64)
    best_ioa = np.zeros(n, dtype=np.float64)
    for part in rle_batches(det_rles):
        batch = [unpack_rle(r) for r in det_rles[part]]
        rows = np.arange(len(batch))
        if instance_rles:
            iou = np.asarray(mask_utils.iou(batch, instance_rles,
                                            np.zeros(len(instance_rles), dtype=np.uint8)))
            iou = iou.reshape(len(batch), len(instance_rles))
            best[part] = np.argmax(iou, axis=1)
            best_iou[part] = iou[rows, best[part]]
        if group_rles:
            ioa = np.asarray(mask_utils.iou(batch, group_rles,
                                            np.ones(len(group_rles), dtype=np.uint8)))
            best_ioa[part] = ioa.reshape(len(batch), len(group_rles)).max(axis=1)
    return best, best_iou, best_ioa


def match_image_class(
    det_rles: list,
    det_boxes: np.ndarray,
    gt_rles: list,
    gt_boxes: np.ndarray,
    gt_has_mask: np.ndarray,
    gt_group_of: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """TP/FP of one image and class, detections ALREADY in processing order.

    Mirrors ``PerImageEvaluation._compute_tp_fp_for_single_class`` in mask
    mode (see the module docstring for the four passes). Returns
    ``(tp, scored)``: ``tp[i]`` true positive, ``scored[i]`` False for
    detections that are ignored (group-of or first hit of a box-only ground
    truth). ``det_rles``: :data:`Rle` or :class:`PackedRle` masks.
    """
    n = len(det_rles)
    tp = np.zeros(n, dtype=bool)
    group_of = np.zeros(n, dtype=bool)
    box_hit = np.zeros(n, dtype=bool)
    rows = np.arange(n)

    masked = np.flatnonzero(gt_has_mask & ~gt_group_of)
    masked_group = np.flatnonzero(gt_has_mask & gt_group_of)
    if masked.size or masked_group.size:
        best, best_iou, best_ioa = _best_mask_overlaps(
            det_rles, [gt_rles[j] for j in masked], [gt_rles[j] for j in masked_group])
        if masked.size:  # 1. mask IoU with instance masks
            tp |= _first_hits(best_iou >= MATCH_THRESHOLD, best)
        if masked_group.size:  # 2. mask intersection over detection area, group-of masks
            group_of |= ~tp & (best_ioa >= MATCH_THRESHOLD)

    boxed = np.flatnonzero(~gt_has_mask & ~gt_group_of)
    if boxed.size:  # 3. box IoU with box-only ground truth: first hit ignored
        iou = box_iou(det_boxes, gt_boxes[boxed])
        best = np.argmax(iou, axis=1)
        hits = _first_hits(~tp & ~group_of & (iou[rows, best] >= MATCH_THRESHOLD), best)
        tp |= hits
        box_hit |= hits

    boxed_group = np.flatnonzero(~gt_has_mask & gt_group_of)
    if boxed_group.size:  # 4. box intersection over detection box area, group-of boxes
        ioa = box_ioa_of_first(det_boxes, gt_boxes[boxed_group])
        best = np.argmax(ioa, axis=1)
        group_of |= ~tp & (ioa[rows, best] >= MATCH_THRESHOLD)

    return tp & ~box_hit, ~group_of & ~box_hit


def descending_order(scores: np.ndarray) -> np.ndarray:
    """``np.argsort(scores)[::-1]`` with a stable sort (see the module doc)."""
    return np.argsort(scores, kind="stable")[::-1]


def precision_recall(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """``metrics.compute_precision_recall``."""
    order = descending_order(scores)
    hits = tp[order].astype(np.float64)
    cum_tp = np.cumsum(hits)
    cum_fp = np.cumsum(1.0 - hits)
    return cum_tp / (cum_tp + cum_fp), cum_tp / float(num_gt)


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """``metrics.compute_average_precision``: VOC all-point AP under the
    monotone (non-increasing) precision envelope."""
    if precision.size == 0:
        return 0.0
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


# --------------------------------------------------------------------------- hierarchy


def _expand_labels(labels: np.ndarray, relatives: dict) -> tuple[np.ndarray, np.ndarray]:
    """Each label followed by its relatives: (source row, label) per output row
    (``oid_hierarchical_labels_expansion``: a row, then its copies)."""
    extra = [relatives.get(m, ()) for m in labels]
    counts = np.fromiter((1 + len(e) for e in extra), dtype=np.int64, count=len(extra))
    source = np.repeat(np.arange(len(labels)), counts)
    new_labels = np.empty(int(counts.sum()), dtype=object)
    new_labels[:] = [x for m, e in zip(labels, extra) for x in (m, *e)]
    return source, new_labels


def expand_ground_truth(
    gt: GroundTruth, hierarchy: Hierarchy, *, log: Callable[[str], None] | None = None
) -> GroundTruth:
    """Copy box and mask rows to every ancestor, then join them again
    (:func:`join_rows`: under the official join a parent class's key collects
    the rows of all its children); positive labels to ancestors, negative
    labels to descendants (``oid_hierarchical_labels_expansion``). A
    :class:`GroundTruth` without ``rows`` (built by hand) has its instances
    copied instead."""
    if gt.expanded:
        return gt
    if gt.rows is not None:
        rows = gt.rows.expanded(hierarchy)
        b, m = join_rows(rows, gt.image_ids, log=log, what="after the hierarchy expansion")
        inst_image, inst_label, inst_box, inst_group, inst_rle = rows.instances(b, m)
    else:
        src, inst_label = _expand_labels(gt.inst_label, hierarchy.ancestors)
        inst_image, inst_box = gt.inst_image[src], gt.inst_box[src]
        inst_group, inst_rle = gt.inst_group_of[src], [gt.inst_rle[i] for i in src]
    positive = gt.label_confidence == 1
    lab_src_p, lab_p = _expand_labels(gt.label_name[positive], hierarchy.ancestors)
    lab_src_n, lab_n = _expand_labels(gt.label_name[~positive], hierarchy.descendants)
    pos_rows, neg_rows = np.flatnonzero(positive), np.flatnonzero(~positive)
    label_rows = np.concatenate([pos_rows[lab_src_p], neg_rows[lab_src_n]])
    return GroundTruth(
        image_ids=gt.image_ids, heights=gt.heights, widths=gt.widths,
        inst_image=inst_image, inst_label=inst_label,
        inst_box=inst_box, inst_group_of=inst_group, inst_rle=inst_rle,
        label_image=gt.label_image[label_rows],
        label_name=np.concatenate([lab_p, lab_n]).astype(object),
        label_confidence=gt.label_confidence[label_rows],
        expanded=True,
    )


# --------------------------------------------------------------------------- evaluation


def _class_index(classes: pd.Index, labels: np.ndarray, what: str) -> np.ndarray:
    index = classes.get_indexer(pd.Index(np.asarray(labels, dtype=object)))
    if (index < 0).any():
        bad = labels[np.flatnonzero(index < 0)[0]]
        raise InputError(f"{what}: unknown class {bad!r} (not in the class list)")
    return index


def evaluate(
    gt: GroundTruth,
    detections: Detections,
    classes: Sequence[str],
    *,
    log: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Score ``detections`` against (expanded) ``gt``; see the module doc."""
    classes = list(classes)
    class_index = pd.Index(classes)
    num_classes = len(classes)
    num_images = len(gt.image_ids)

    # ground truth, grouped by (image, class)
    g_cls = _class_index(class_index, gt.inst_label, "ground truth")
    g_has_mask = rle_areas(gt.inst_rle) > 0
    g_key = gt.inst_image.astype(np.int64) * num_classes + g_cls
    counted = g_has_mask & ~gt.inst_group_of
    num_gt = np.bincount(g_cls[counted], minlength=num_classes).astype(np.int64)
    g_order = np.argsort(g_key, kind="stable")
    g_sorted_keys = g_key[g_order]
    l_cls = _class_index(class_index, gt.label_name, "image labels")
    evaluatable = np.unique(np.concatenate(
        [g_key, gt.label_image.astype(np.int64) * num_classes + l_cls]))

    # detections: evaluated images and classes only, non-empty masks only
    d_img = gt.image_index(detections.image_id)
    d_cls = _class_index(class_index, detections.label, "detections")
    d_key = d_img.astype(np.int64) * num_classes + d_cls
    keep = np.flatnonzero((d_img >= 0) & np.isin(d_key, evaluatable))
    rles = [detections.rle[i] for i in keep]
    areas, xywh = measure_rles(rles)  # inflated in bounded batches
    nonempty = areas > 0  # an empty mask has a zero box: _remove_invalid_boxes
    keep, rles, xywh = keep[nonempty], [r for r, ok in zip(rles, nonempty) if ok], xywh[nonempty]
    img = d_img[keep]
    sizes = np.asarray([_rle_size(r) for r in rles], dtype=np.int64).reshape(-1, 2)
    wrong = (sizes[:, 0] != gt.heights[img]) | (sizes[:, 1] != gt.widths[img])
    if wrong.any():
        k = int(np.flatnonzero(wrong)[0])
        raise InputError(f"detections: image {gt.image_ids[img[k]]}: mask size "
                         f"{sizes[k].tolist()} differs from the ground-truth image size "
                         f"{[int(gt.heights[img[k]]), int(gt.widths[img[k]])]}")
    heights = gt.heights[img].astype(np.float64)
    widths = gt.widths[img].astype(np.float64)
    boxes = np.stack([xywh[:, 1] / heights, xywh[:, 0] / widths,
                      (xywh[:, 1] + xywh[:, 3]) / heights, (xywh[:, 0] + xywh[:, 2]) / widths],
                     axis=1)
    scores = detections.score[keep].astype(np.float64)
    # group by (class, image) keeping the submission order inside a group
    group_key = d_cls[keep].astype(np.int64) * max(num_images, 1) + img
    order = np.argsort(group_key, kind="stable")
    group_key = group_key[order]
    starts = np.flatnonzero(np.r_[True, group_key[1:] != group_key[:-1]]) if len(order) else []
    ends = np.r_[starts[1:], len(order)] if len(order) else []

    per_class_scores: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    per_class_tp: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    for start, end in zip(starts, ends):
        members = order[start:end]
        members = members[descending_order(scores[members])]
        cls, image = divmod(int(group_key[start]), max(num_images, 1))
        key = image * num_classes + cls
        lo, hi = np.searchsorted(g_sorted_keys, [key, key + 1])
        gt_rows = g_order[lo:hi]
        if gt_rows.size:
            # a submitted mask is inflated again here (alone or in a bounded batch)
            tp, scored = match_image_class(
                [rles[i] for i in members], boxes[members], [gt.inst_rle[j] for j in gt_rows],
                gt.inst_box[gt_rows], g_has_mask[gt_rows], gt.inst_group_of[gt_rows])
        else:  # label only: every detection is a false positive
            tp, scored = np.zeros(len(members), bool), np.ones(len(members), bool)
        per_class_scores[cls].append(scores[members][scored])
        per_class_tp[cls].append(tp[scored])

    ap = np.full(num_classes, np.nan)
    num_scored = np.zeros(num_classes, dtype=np.int64)
    num_tp = np.zeros(num_classes, dtype=np.int64)
    curves_p = [np.zeros(0)] * num_classes
    curves_r = [np.zeros(0)] * num_classes
    for c in range(num_classes):
        c_scores = np.concatenate(per_class_scores[c]) if per_class_scores[c] else np.zeros(0)
        c_tp = np.concatenate(per_class_tp[c]) if per_class_tp[c] else np.zeros(0, bool)
        num_scored[c], num_tp[c] = len(c_scores), int(c_tp.sum())
        if num_gt[c] == 0:
            continue
        precision, recall = precision_recall(c_scores, c_tp, int(num_gt[c]))
        ap[c] = average_precision(precision, recall)
        curves_p[c], curves_r[c] = precision, recall
    if log:
        log(f"metric: {len(detections)} detections, {len(keep)} evaluated in "
            f"{len(starts)} (image, class) groups over {num_images} images")
    return EvaluationResult(classes=classes, average_precision=ap, num_gt=num_gt,
                            num_scored=num_scored, num_tp=num_tp, num_images=num_images,
                            extra={"num_detections": len(detections),
                                   "num_detections_evaluated": int(len(keep))},
                            precision=curves_p, recall=curves_r)


# --------------------------------------------------------------------------- submission


def read_submission(
    path: str | Path,
    gt: GroundTruth,
    known_classes: Iterable[str],
    *,
    images: validity.ImageList | None = None,
    resize: bool = False,
    log: Callable[[str], None] | None = None,
) -> Detections:
    """Read a Kaggle CSV ``ImageID,ImageWidth,ImageHeight,PredictionString``.

    What is valid is decided by :mod:`oidseg.validity`, as for the
    submission validator (same rules, same messages): every row is read and
    checked, its PredictionString too; the rows must be exactly the images
    of ``images`` (default: the ground truth's images, ``gt.image_ids``:
    those of ``--image-ids``, or of the ground-truth files); a row must
    declare its image's ground-truth size where that size is known.

    ``resize=True`` (``--resize-masks``; not a valid submission for the
    validator) accepts other declared sizes instead and resizes those masks
    (nearest at pixel centres) to the ground-truth size: that decodes each
    such mask to ImageHeight x ImageWidth bytes.

    The masks are kept as they came (:class:`PackedRle`): memory about the
    size of the input; see :mod:`oidseg.validity`.
    """
    path = Path(path)
    known = set(known_classes)
    image_ids = gt.image_ids.tolist()
    if images is None:
        images = validity.ImageList(ids=image_ids, source="of the ground truth")
    position = {str(image_id): k for k, image_id in enumerate(image_ids)}
    sizes = None
    if not resize:
        sized = np.flatnonzero((gt.heights > 0) & (gt.widths > 0))
        sizes = {str(image_ids[k]): (int(gt.widths[k]), int(gt.heights[k])) for k in sized}
    ids, labels, scores, rles = [], [], [], []
    resized_images = num_rows = evaluated = 0
    for row in validity.iter_submission(path, sizes, images):
        num_rows += 1
        pos = position.get(row.image_id, -1)
        checked = validity.row_predictions(path, row, known, keep_masks=pos >= 0)
        if pos < 0 or not len(checked):
            continue
        evaluated += 1
        height, width = row.height, row.width
        gt_h, gt_w = int(gt.heights[pos]), int(gt.widths[pos])
        size = (height, width)
        image_rles = [PackedRle(size, data, n)
                      for data, n in zip(checked.masks, checked.lengths.tolist())]
        if (gt_h, gt_w) != size and gt_h > 0 and gt_w > 0:
            resized_images += 1
            size = (gt_h, gt_w)
            for k, packed in enumerate(image_rles):
                counts = resize_rle(packed.unpack(), gt_h, gt_w)["counts"]
                image_rles[k] = PackedRle(size, zlib.compress(counts, 1), len(counts))
        ids.extend([row.image_id] * len(checked))
        labels.extend(checked.labels)
        scores.append(checked.scores)
        rles.extend(image_rles)
    if log:
        log(f"submission: {num_rows} rows, {evaluated} evaluated images with detections, "
            f"{len(rles)} detections, {resized_images} images resized to the ground-truth size")
    return Detections(image_id=np.asarray(ids, dtype=object), label=np.asarray(labels, dtype=object),
                      score=np.concatenate(scores) if scores else np.zeros(0), rle=rles)


# --------------------------------------------------------------------------- ground truth


class MaskSource:
    """Mask PNGs by file name, from folders and/or the official zip archives
    (read inside the zips, never extracted)."""

    def __init__(self, paths: Sequence[str | Path]):
        self.dirs: list[Path] = []
        self.members: dict[str, tuple[int, str]] = {}
        self.zips: list[zipfile.ZipFile] = []
        for p in map(Path, paths):
            if p.is_dir():
                self.dirs.append(p)
            elif p.is_file():
                try:
                    archive = zipfile.ZipFile(p)
                except (zipfile.BadZipFile, OSError) as exc:
                    raise InputError(f"{p}: not a readable zip archive ({exc})") from exc
                for name in archive.namelist():
                    if name.endswith(".png"):
                        self.members.setdefault(name.rsplit("/", 1)[-1], (len(self.zips), name))
                self.zips.append(archive)
            else:
                raise InputError(f"{p}: mask folder or zip archive is missing")

    def read(self, name: str) -> bytes:
        hit = self.members.get(name)
        if hit is not None:
            archive = self.zips[hit[0]]
            try:
                return archive.read(hit[1])
            except (zipfile.BadZipFile, OSError, zlib.error) as exc:
                raise InputError(f"{archive.filename}: cannot read {hit[1]} ({exc})") from exc
        for folder in self.dirs:
            candidate = folder / name
            if candidate.is_file():
                return candidate.read_bytes()
        raise InputError(f"mask {name}: not found in the mask folders/archives given")

    def close(self) -> None:
        for archive in self.zips:
            archive.close()


def load_mask_rle(data: bytes, name: str, height: int, width: int) -> Rle:
    """PNG bytes -> RLE at ``height x width`` (nearest resize at pixel
    centres, :data:`MASK_RESIZE`; threshold > 0)."""
    mask = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise InputError(f"mask {name}: not a readable PNG")
    if mask.shape != (height, width):
        mask = cv2.resize(mask, (int(width), int(height)), interpolation=MASK_RESIZE)
    return encode_mask(mask > 0)


@dataclass
class AnnotationRows:
    """The ground truth's bbox rows and mask rows before they are joined
    into instances (:func:`join_rows`). Coordinates are normalised
    ``XMin, XMax, YMin, YMax`` as parsed from the CSVs; mask rows are never
    group-of (the masks CSV has no IsGroupOf)."""

    box_image: np.ndarray  # int64 index into GroundTruth.image_ids
    box_label: np.ndarray  # object MIDs
    box_coords: np.ndarray  # float64 [n, 4]
    box_group_of: np.ndarray  # bool
    mask_image: np.ndarray
    mask_label: np.ndarray
    mask_coords: np.ndarray
    mask_rle: list  # Rle per mask row
    join: str = "official"

    def expanded(self, hierarchy: Hierarchy) -> "AnnotationRows":
        """Every row followed by a copy for each ancestor of its class."""
        b, box_label = _expand_labels(self.box_label, hierarchy.ancestors)
        m, mask_label = _expand_labels(self.mask_label, hierarchy.ancestors)
        return AnnotationRows(
            box_image=self.box_image[b], box_label=box_label, box_coords=self.box_coords[b],
            box_group_of=self.box_group_of[b], mask_image=self.mask_image[m],
            mask_label=mask_label, mask_coords=self.mask_coords[m],
            mask_rle=[self.mask_rle[k] for k in m], join=self.join)

    def instances(self, b: np.ndarray, m: np.ndarray) -> tuple:
        """(image, label, box ``[ymin, xmin, ymax, xmax]``, group-of, rle) of
        the instances ``(b[i], m[i])`` (bbox row, mask row; -1 for none): the
        bbox row's fields where there is one, else the mask row's."""
        has_box = b >= 0
        boxed, masked = np.flatnonzero(has_box), np.flatnonzero(~has_box)
        image = np.empty(len(b), dtype=np.int64)
        label = np.empty(len(b), dtype=object)
        coords = np.empty((len(b), 4), dtype=np.float64)
        image[boxed], image[masked] = self.box_image[b[boxed]], self.mask_image[m[masked]]
        label[boxed], label[masked] = self.box_label[b[boxed]], self.mask_label[m[masked]]
        coords[boxed], coords[masked] = self.box_coords[b[boxed]], self.mask_coords[m[masked]]
        group_of = np.zeros(len(b), dtype=bool)
        group_of[boxed] = self.box_group_of[b[boxed]]
        rles = [self.mask_rle[k] if k >= 0 else None for k in m.tolist()]
        return image, label, coords[:, [2, 0, 3, 1]], group_of, rles


def _join_frames(rows: AnnotationRows) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two sides of ``merge_boxes_and_masks`` (ImageID as its index into
    the sorted image list: same order as the strings)."""
    def side(image, label, coords, group_of, name):
        return pd.DataFrame({
            "LabelName": np.asarray(label, dtype=object), "ImageID": np.asarray(image, np.int64),
            "XMin": coords[:, 0], "XMax": coords[:, 1], "YMin": coords[:, 2], "YMax": coords[:, 3],
            "IsGroupOf": np.asarray(group_of, np.int64), name: np.arange(len(image), dtype=np.int64)})

    return (side(rows.box_image, rows.box_label, rows.box_coords, rows.box_group_of, "_b"),
            side(rows.mask_image, rows.mask_label, rows.mask_coords,
                 np.zeros(len(rows.mask_image), np.int64), "_m"))


def join_rows(
    rows: AnnotationRows,
    image_ids: np.ndarray,
    *,
    log: Callable[[str], None] | None = None,
    what: str = "",
) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth instances as ``(bbox row, mask row)`` index pairs (-1 for
    none), in instance order.

    ``rows.join == "official"``: ``merge_boxes_and_masks``, i.e.
    ``pandas.merge(how='outer')`` on :data:`JOIN_KEY`, exact float equality;
    k bbox rows and m mask rows under one key give k x m instances (each box
    row with each mask row); a row without a partner is an instance alone.
    ``"tolerant"``: :func:`_pair_masks_with_boxes` (one to one within
    :data:`BOX_MATCH_TOLERANCE`), bbox rows first, then the unpaired mask
    rows. ``log`` gets what the join did with duplicated keys and near
    misses (:func:`_report_join`)."""
    if rows.join not in JOINS:
        raise InputError(f"unknown box/mask join {rows.join!r} (one of {', '.join(JOINS)})")
    left, right = _join_frames(rows)
    if rows.join == "official":
        merged = pd.merge(left, right, how="outer", on=JOIN_KEY)
        b = merged["_b"].to_numpy(np.float64)
        m = merged["_m"].to_numpy(np.float64)
        b = np.where(np.isnan(b), -1, b).astype(np.int64)
        m = np.where(np.isnan(m), -1, m).astype(np.int64)
    else:
        bbox = pd.DataFrame({"ImageID": left["ImageID"], "LabelName": left["LabelName"],
                             "XMin": left["XMin"], "XMax": left["XMax"],
                             "YMin": left["YMin"], "YMax": left["YMax"]})
        masks = pd.DataFrame({"ImageID": right["ImageID"], "LabelName": right["LabelName"],
                              "BoxXMin": right["XMin"], "BoxXMax": right["XMax"],
                              "BoxYMin": right["YMin"], "BoxYMax": right["YMax"]})
        pb, pm = _pair_masks_with_boxes(bbox, masks)
        mask_of_box = np.full(len(left), -1, dtype=np.int64)
        mask_of_box[pb] = pm
        unpaired = np.setdiff1d(np.arange(len(right)), pm)
        b = np.concatenate([np.arange(len(left)), np.full(len(unpaired), -1)]).astype(np.int64)
        m = np.concatenate([mask_of_box, unpaired]).astype(np.int64)
    if log:
        _report_join(rows, left, right, b, m, image_ids, log, what)
    return b, m


def _report_join(rows: AnnotationRows, left: pd.DataFrame, right: pd.DataFrame,
                 b: np.ndarray, m: np.ndarray, image_ids: np.ndarray,
                 log: Callable[[str], None], what: str) -> None:
    """Counts of what the join did that a one-to-one pairing would not."""
    where = f" {what}" if what else ""
    n_pairs = int(((b >= 0) & (m >= 0)).sum())
    log(f"ground truth{where}: {rows.join} join of {len(left)} bbox rows and {len(right)} mask "
        f"rows: {len(b)} instances, {n_pairs} with a box row and a mask, "
        f"{int((m < 0).sum())} box-only, {int((b < 0).sum())} mask rows without a box row")
    if rows.join != "official" or not len(left) or not len(right):
        return
    key_b = left.groupby(JOIN_KEY, sort=False).size().rename("k")
    key_m = right.groupby(JOIN_KEY, sort=False).size().rename("m")
    both = pd.concat([key_b, key_m], axis=1, join="inner")
    several = both[(both["k"] > 1) | (both["m"] > 1)]
    if len(several):
        first = several.index[0]
        log(f"ground truth{where}: warning: {len(several)} keys (ImageID, LabelName, box, "
            f"IsGroupOf) have several bbox and/or mask rows ({int(several['k'].sum())} bbox rows, "
            f"{int(several['m'].sum())} mask rows): the official join makes "
            f"{int((several['k'] * several['m']).sum())} ground-truth instances of them "
            f"(k x m per key; one to one would make {int(np.maximum(several['k'], several['m']).sum())}); "
            f"first: image {image_ids[first[1]]}, class {first[0]}, "
            f"{int(several['k'].iloc[0])} x {int(several['m'].iloc[0])}")
    # mask rows without an exact box row that a box row of the same image and
    # class matches within the tolerance: coordinates differing in the last digits
    lone_masks = np.unique(m[b < 0])
    lone_boxes = np.unique(b[(m < 0) & (b >= 0)])
    if lone_masks.size and lone_boxes.size:
        near = right.iloc[lone_masks].merge(left.iloc[lone_boxes], on=["ImageID", "LabelName"],
                                            suffixes=("_m", "_b"))
        diff = np.zeros(len(near))
        for c in ("XMin", "XMax", "YMin", "YMax"):
            diff = np.maximum(diff, np.abs(near[f"{c}_m"].to_numpy() - near[f"{c}_b"].to_numpy()))
        close = near["_m"].to_numpy()[diff <= BOX_MATCH_TOLERANCE]
        if close.size:
            log(f"ground truth{where}: warning: {np.unique(close).size} mask rows have no bbox row "
                f"of exactly their box but one within {BOX_MATCH_TOLERANCE:g} (same image and "
                "class): the official join keeps them apart (a mask-only and a box-only ground "
                "truth); --box-join tolerant would pair them")


def report_ground_truth_files(bbox: pd.DataFrame, masks: pd.DataFrame, labels: pd.DataFrame,
                              paths: tuple, log: Callable[[str], None]) -> None:
    """Warn, with counts, about repeated and conflicting rows of the
    validation CSVs. They are scored as the official evaluator scores them
    (every row counts), so nothing is dropped: the log says what happened.

    - bbox rows repeating an earlier row (ImageID, LabelName, box, IsGroupOf):
      each is its own ground truth (and multiplies with its masks);
    - the same (ImageID, LabelName, box) both group-of and not;
    - (several mask rows of one box: :func:`_report_join`; a repeated
      MaskPath is an error of ``oidseg.raw.read_masks_csv``);
    - image labels repeating an earlier row, or both 1 and 0 for one
      (ImageID, LabelName): both kept (positive ones expand to ancestors,
      negative ones to descendants).
    """
    _, bbox_csv, labels_csv = paths

    def first_row(mask: np.ndarray) -> str:
        k = int(np.flatnonzero(mask)[0])
        return f"first: row {k + 1}"

    box_key = ["ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax"]
    dup = bbox.duplicated(subset=[*box_key, "IsGroupOf"]).to_numpy()
    if dup.any():
        log(f"ground truth: warning: {bbox_csv}: {int(dup.sum())} rows repeat an earlier row "
            f"(ImageID, LabelName, box, IsGroupOf) ({first_row(dup)}): each counts as a ground "
            "truth, as in the official evaluator")
    unique_boxes = bbox.drop_duplicates(subset=[*box_key, "IsGroupOf"])
    both = unique_boxes.duplicated(subset=box_key, keep=False).to_numpy()
    if both.any():
        log(f"ground truth: warning: {bbox_csv}: {int(both.sum()) // 2} boxes (ImageID, "
            "LabelName, box) appear both with IsGroupOf 0 and 1: both kept")
    dup = labels.duplicated(subset=["ImageID", "LabelName", "Confidence"]).to_numpy()
    if dup.any():
        log(f"ground truth: warning: {labels_csv}: {int(dup.sum())} rows repeat an earlier row "
            f"({first_row(dup)}): no effect on the score")
    pairs = labels.drop_duplicates(subset=["ImageID", "LabelName", "Confidence"])
    conflict = pairs.duplicated(subset=["ImageID", "LabelName"], keep=False).to_numpy()
    if conflict.any():
        log(f"ground truth: warning: {labels_csv}: {int(conflict.sum()) // 2} (ImageID, "
            "LabelName) have both Confidence 1 and 0: both kept, as in the official evaluator "
            "(the 1 expands to ancestors, the 0 to descendants)")


def _pair_masks_with_boxes(bbox: pd.DataFrame, masks: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(bbox row, mask row) pairs of equal ImageID/LabelName and box within
    :data:`BOX_MATCH_TOLERANCE`; one to one, closest first."""
    left = pd.DataFrame({"ImageID": bbox["ImageID"].to_numpy(), "LabelName": bbox["LabelName"].to_numpy(),
                         "b": np.arange(len(bbox))})
    right = pd.DataFrame({"ImageID": masks["ImageID"].to_numpy(), "LabelName": masks["LabelName"].to_numpy(),
                          "m": np.arange(len(masks))})
    pairs = left.merge(right, on=["ImageID", "LabelName"])
    if pairs.empty:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    b, m = pairs["b"].to_numpy(), pairs["m"].to_numpy()
    bbox_xy = bbox[["XMin", "XMax", "YMin", "YMax"]].to_numpy(np.float64)
    mask_xy = masks[["BoxXMin", "BoxXMax", "BoxYMin", "BoxYMax"]].to_numpy(np.float64)
    diff = np.abs(bbox_xy[b] - mask_xy[m]).max(axis=1)
    ok = diff <= BOX_MATCH_TOLERANCE
    order = np.argsort(diff[ok], kind="stable")  # closest first; ties: row order
    return _greedy_one_to_one(b[ok][order], m[ok][order], len(bbox), len(masks))


def _greedy_one_to_one(b: np.ndarray, m: np.ndarray, n_b: int, n_m: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching of candidate pairs ``(b[k], m[k])`` taken in
    the given order (a pair is accepted when neither end is taken yet).

    Vectorised in rounds: a pair that comes first among the remaining pairs of
    its box row AND of its mask row is accepted (the greedy takes it too);
    pairs sharing an end with an accepted one are dropped. Two mask rows of the
    same image, class and box thus pair with two such box rows, not one.
    """
    rank = np.arange(b.size)
    out_b, out_m = [], []
    while rank.size:
        first_b = np.full(n_b, rank.size, dtype=np.int64)
        first_m = np.full(n_m, rank.size, dtype=np.int64)
        pos = np.arange(rank.size)
        np.minimum.at(first_b, b, pos)
        np.minimum.at(first_m, m, pos)
        take = (first_b[b] == pos) & (first_m[m] == pos)
        out_b.append(b[take])
        out_m.append(m[take])
        used_b = np.zeros(n_b, bool)
        used_m = np.zeros(n_m, bool)
        used_b[b[take]] = True
        used_m[m[take]] = True
        keep = ~used_b[b] & ~used_m[m]
        b, m, rank = b[keep], m[keep], rank[keep]
    if not out_b:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_b).astype(np.int64), np.concatenate(out_m).astype(np.int64)


def add_ground_truth_arguments(parser) -> None:
    """The command-line options naming the official validation files that
    :func:`load_ground_truth` reads (scripts/evaluate.py, scripts/visualize.py)."""
    parser.add_argument("--hierarchy", required=True, help="hierarchy JSON")
    parser.add_argument("--classes", required=True, help="class-description CSV (MID,DisplayName)")
    parser.add_argument("--masks-csv", required=True, help="validation segmentation masks CSV")
    parser.add_argument("--bbox-csv", required=True, help="validation segmentation bbox CSV")
    parser.add_argument("--labels-csv", required=True, help="validation image-level labels CSV")
    parser.add_argument("--masks", required=True, nargs="+",
                        help="folder(s) of mask PNGs and/or the mask zip archives")


def load_ground_truth(
    masks_csv: str | Path,
    bbox_csv: str | Path,
    labels_csv: str | Path,
    hierarchy: Hierarchy,
    mask_paths: Sequence[str | Path],
    images_dir: str | Path,
    image_ids: Sequence[str] | None = None,
    *,
    join: str = "official",
    size_lookup: Callable | None = None,
    log: Callable[[str], None] | None = None,
) -> GroundTruth:
    """Read the official validation files into a (not yet expanded)
    :class:`GroundTruth`, restricted to ``image_ids`` when given. Instances:
    the bbox and mask rows joined by ``join`` (:func:`join_rows`); the rows
    are kept for :func:`expand_ground_truth`. Repeated and conflicting rows
    are reported to ``log`` (:func:`report_ground_truth_files`)."""
    from oidseg import raw

    if join not in JOINS:
        raise InputError(f"unknown box/mask join {join!r} (one of {', '.join(JOINS)})")
    known = hierarchy.classes
    masks = raw.read_masks_csv(masks_csv, known)
    bbox = raw.read_bbox_csv(bbox_csv, known)
    labels = raw.read_labels_csv(labels_csv, known)
    if image_ids is not None:
        wanted = pd.Index(np.asarray(image_ids, dtype=object))
        masks = masks[masks["ImageID"].isin(wanted)].reset_index(drop=True)
        bbox = bbox[bbox["ImageID"].isin(wanted)].reset_index(drop=True)
        labels = labels[labels["ImageID"].isin(wanted)].reset_index(drop=True)
        all_ids = np.asarray(image_ids, dtype=object)
    else:
        all_ids = np.concatenate([masks["ImageID"].to_numpy(object), bbox["ImageID"].to_numpy(object),
                                  labels["ImageID"].to_numpy(object)])
    image_list = np.unique(np.asarray(all_ids, dtype=str)).astype(object)
    if log:
        report_ground_truth_files(bbox, masks, labels, (masks_csv, bbox_csv, labels_csv), log)

    index = pd.Index(image_list)
    rows = AnnotationRows(
        box_image=index.get_indexer(pd.Index(bbox["ImageID"].to_numpy(object))).astype(np.int64),
        box_label=bbox["LabelName"].to_numpy(object),
        box_coords=bbox[["XMin", "XMax", "YMin", "YMax"]].to_numpy(np.float64).reshape(-1, 4),
        box_group_of=bbox["IsGroupOf"].to_numpy() == 1,
        mask_image=index.get_indexer(pd.Index(masks["ImageID"].to_numpy(object))).astype(np.int64),
        mask_label=masks["LabelName"].to_numpy(object),
        mask_coords=masks[["BoxXMin", "BoxXMax", "BoxYMin", "BoxYMax"]].to_numpy(np.float64).reshape(-1, 4),
        mask_rle=[None] * len(masks), join=join)
    label_image = index.get_indexer(pd.Index(labels["ImageID"].to_numpy(object)))

    # image sizes (JPEG headers) of every image with annotations
    annotated = np.unique(np.concatenate([rows.box_image, rows.mask_image, label_image])).astype(np.int64)
    heights = np.zeros(len(image_list), dtype=np.int64)
    widths = np.zeros(len(image_list), dtype=np.int64)
    if annotated.size:
        lookup = size_lookup or raw.JpegSizeReader(images_dir)
        w, h = lookup(list(image_list[annotated]))
        widths[annotated], heights[annotated] = w, h
    if log:
        log(f"ground truth: {len(image_list)} images, {len(bbox)} bbox rows, {len(masks)} mask "
            f"rows, {len(labels)} image labels")

    # masks: PNG -> nearest resize to the image size -> RLE, once per mask row
    source = MaskSource(mask_paths)
    try:
        names = masks["MaskPath"].to_numpy(object)
        for k in range(len(masks)):
            pos = rows.mask_image[k]
            rows.mask_rle[k] = load_mask_rle(source.read(names[k]), names[k],
                                             int(heights[pos]), int(widths[pos]))
            if log and (k + 1) % 20000 == 0:
                log(f"ground truth: {k + 1}/{len(masks)} masks decoded")
    finally:
        source.close()
    b, m = join_rows(rows, image_list, log=log, what="(files)")
    inst_image, inst_label, inst_box, inst_group, inst_rle = rows.instances(b, m)
    return GroundTruth(
        image_ids=image_list, heights=heights, widths=widths,
        inst_image=inst_image, inst_label=inst_label,
        inst_box=inst_box, inst_group_of=inst_group, inst_rle=inst_rle,
        label_image=label_image.astype(np.int64),
        label_name=labels["LabelName"].to_numpy(object),
        label_confidence=labels["Confidence"].to_numpy(np.int8),
        rows=rows,
    )


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
