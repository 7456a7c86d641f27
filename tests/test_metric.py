"""Tests of the OID Challenge 2019 instance-segmentation metric (oidseg.metric)
and of its scorer scripts/evaluate.py. Every expected number is worked out by
hand in the comments, following the TF Object Detection API semantics.

Tiny hierarchy used throughout (root excluded):

    G (/m/g) -> P (/m/p) -> L1 (/m/l1), L2 (/m/l2)
             -> L4 (/m/l4)
    L3 (/m/l3)

leaves L1 L2 L3 L4; parent P; grandparent G (expanded parents: P, G).
Images are 10 x 10 pixels unless said otherwise.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import math
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from oidseg import metric
from oidseg.errors import InputError, run_cli
from oidseg.hierarchy import load_hierarchy

G, P, L1, L2, L3, L4 = "/m/g", "/m/p", "/m/l1", "/m/l2", "/m/l3", "/m/l4"
CLASSES = [G, P, L1, L2, L3, L4]
ROOT = Path(__file__).resolve().parents[1]


def write_hierarchy(folder: Path) -> tuple[Path, Path]:
    tree = {"LabelName": "/m/root", "Subcategory": [
        {"LabelName": G, "Subcategory": [
            {"LabelName": P, "Subcategory": [{"LabelName": L1}, {"LabelName": L2}]},
            {"LabelName": L4}]},
        {"LabelName": L3}]}
    hierarchy = folder / "hierarchy.json"
    hierarchy.write_text(json.dumps(tree))
    classes = folder / "classes.csv"
    classes.write_text("".join(f"{m},Name {m[3:]}\n" for m in CLASSES))
    return hierarchy, classes


@pytest.fixture(scope="module")
def hierarchy(tmp_path_factory):
    return load_hierarchy(*write_hierarchy(tmp_path_factory.mktemp("h")))


def rect(y0: int, y1: int, x0: int, x1: int, size: tuple[int, int] = (10, 10)) -> np.ndarray:
    """Binary mask with rows y0..y1-1 and columns x0..x1-1 set."""
    mask = np.zeros(size, dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def tight_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return [ys.min() / h, xs.min() / w, (ys.max() + 1) / h, (xs.max() + 1) / w]


def make_gt(images, instances, labels=(), size=(10, 10)) -> metric.GroundTruth:
    """instances: (image, label, mask or None, box [ymin,xmin,ymax,xmax] or None, group_of);
    labels: (image, label, confidence)."""
    images = sorted(images)
    index = {im: i for i, im in enumerate(images)}
    boxes = [box if box is not None else tight_box(mask) for _, _, mask, box, _ in instances]
    return metric.GroundTruth(
        image_ids=np.asarray(images, dtype=object),
        heights=np.full(len(images), size[0], dtype=np.int64),
        widths=np.full(len(images), size[1], dtype=np.int64),
        inst_image=np.asarray([index[i[0]] for i in instances], dtype=np.int64),
        inst_label=np.asarray([i[1] for i in instances], dtype=object),
        inst_box=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        inst_group_of=np.asarray([i[4] for i in instances], dtype=bool),
        inst_rle=[None if i[2] is None else metric.encode_mask(i[2]) for i in instances],
        label_image=np.asarray([index[lab[0]] for lab in labels], dtype=np.int64),
        label_name=np.asarray([lab[1] for lab in labels], dtype=object),
        label_confidence=np.asarray([lab[2] for lab in labels], dtype=np.int8),
    )


def make_dets(dets) -> metric.Detections:
    """dets: (image, label, score, mask)."""
    return metric.Detections(
        image_id=np.asarray([d[0] for d in dets], dtype=object),
        label=np.asarray([d[1] for d in dets], dtype=object),
        score=np.asarray([d[2] for d in dets], dtype=np.float64),
        rle=[metric.encode_mask(d[3]) for d in dets],
    )


def score(gt, dets, hierarchy) -> metric.EvaluationResult:
    return metric.evaluate(metric.expand_ground_truth(gt, hierarchy), make_dets(dets), CLASSES)


def ap_of(result: metric.EvaluationResult, mid: str) -> float:
    return float(result.average_precision[result.classes.index(mid)])


# --------------------------------------------------------------------------- AP


def test_average_precision_is_voc_all_point_under_the_envelope():
    # 3 GT; ranked TP FP TP FP: precision 1, 1/2, 2/3, 1/2; recall 1/3, 1/3, 2/3, 2/3.
    # Envelope: 1, 2/3, 2/3, 1/2 -> AP = 1/3 * 1 + 1/3 * 2/3 = 5/9 (recall never reaches 1).
    precision, recall = metric.precision_recall(
        np.array([0.9, 0.8, 0.7, 0.6]), np.array([True, False, True, False]), 3)
    assert np.allclose(precision, [1, 1 / 2, 2 / 3, 1 / 2])
    assert np.allclose(recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert metric.average_precision(precision, recall) == pytest.approx(5 / 9)
    # no detections at all: AP 0
    assert metric.average_precision(np.zeros(0), np.zeros(0)) == 0.0


# --------------------------------------------------------------------------- matching cases


def test_false_positive_at_iou_one_third_before_true_positive(hierarchy):
    # GT L3 = columns 0-3 (area 40). Det 0.9 = columns 2-5: intersection 20,
    # union 60, IoU 1/3 < 0.5 -> FP. Det 0.8 = the GT mask, IoU 1 -> TP.
    # Ranked FP, TP: precision 0, 1/2 at recall 0, 1 -> AP = 1 * 1/2 = 0.5.
    gt = make_gt(["a"], [("a", L3, rect(0, 10, 0, 4), None, False)])
    result = score(gt, [("a", L3, 0.9, rect(0, 10, 2, 6)), ("a", L3, 0.8, rect(0, 10, 0, 4))],
                   hierarchy)
    assert ap_of(result, L3) == pytest.approx(0.5)
    assert result.mean_ap == pytest.approx(0.5)
    assert result.mean_ap_over(CLASSES)[1] == 1  # only L3 has ground truth
    assert int(result.num_tp[CLASSES.index(L3)]) == 1


def test_best_iou_ground_truth_taken_means_false_positive_without_fallback(hierarchy):
    # Two GT of L3: A = rows 0-4 x cols 0-4 (25 px), B = rows 0-4 x cols 5-9 (25 px).
    # Det 0.9 = A -> TP on A. Det 0.8 = rows 0-4 x cols 0-6 (35 px): IoU with A
    # 25/35 = 0.71 (best), with B 10/50 = 0.2. A is taken -> FP; TF does not
    # fall back to B. Ranked TP, FP: precision 1 at recall 1/2 -> AP 0.5.
    gt = make_gt(["a"], [("a", L3, rect(0, 5, 0, 5), None, False),
                         ("a", L3, rect(0, 5, 5, 10), None, False)])
    result = score(gt, [("a", L3, 0.9, rect(0, 5, 0, 5)), ("a", L3, 0.8, rect(0, 5, 0, 7))],
                   hierarchy)
    assert ap_of(result, L3) == pytest.approx(0.5)


def test_box_only_ground_truth_ignored_on_first_hit_false_positive_after(hierarchy):
    # L3: mask GT M = rows 0-4 x cols 0-4; box-only GT B (bbox row without a mask)
    # = rows 5-9 x cols 5-9 -> normalised [0.5, 0.5, 1.0, 1.0]. num_gt = 1 (box-only
    # ground truth is not counted, _update_ground_truth_statistics).
    # Det 0.9 = rows 5-9 x cols 5-9: no mask match, box IoU 1 with B -> ignored
    # (first hit). Det 0.8 = same -> B already hit -> FP. Det 0.7 = M -> TP.
    # Scored: FP (0.8), TP (0.7) -> AP 0.5 (1/3 if the first hit counted as FP,
    # 1.0 if every hit were ignored).
    gt = make_gt(["a"], [("a", L3, rect(0, 5, 0, 5), None, False),
                         ("a", L3, None, [0.5, 0.5, 1.0, 1.0], False)])
    dets = [("a", L3, 0.9, rect(5, 10, 5, 10)), ("a", L3, 0.8, rect(5, 10, 5, 10)),
            ("a", L3, 0.7, rect(0, 5, 0, 5))]
    result = score(gt, dets, hierarchy)
    i = CLASSES.index(L3)
    assert int(result.num_gt[i]) == 1
    assert int(result.num_scored[i]) == 2
    assert ap_of(result, L3) == pytest.approx(0.5)


def test_hit_inside_group_of_box_is_ignored(hierarchy):
    # L3: mask GT M = rows 0-4 x cols 0-4; group-of box G = rows 5-9 x all columns
    # = [0.5, 0, 1, 1] (IsGroupOf=1, no mask). num_gt = 1.
    # Det 0.95 = rows 1-7 x cols 6-9: tight box [0.1, 0.6, 0.8, 1.0], area
    # 0.7 * 0.4 = 0.28; intersection with G 0.3 * 0.4 = 0.12; ioa 0.43 < 0.5 -> FP.
    # Det 0.9 = rows 6-9 x cols 1-4: inside G, ioa 1 -> ignored. Det 0.8 = M -> TP.
    # Scored: FP, TP -> AP 0.5 (1/3 if the group-of hit were a FP).
    gt = make_gt(["a"], [("a", L3, rect(0, 5, 0, 5), None, False),
                         ("a", L3, None, [0.5, 0.0, 1.0, 1.0], True)])
    dets = [("a", L3, 0.95, rect(1, 8, 6, 10)), ("a", L3, 0.9, rect(6, 10, 1, 5)),
            ("a", L3, 0.8, rect(0, 5, 0, 5))]
    result = score(gt, dets, hierarchy)
    i = CLASSES.index(L3)
    assert int(result.num_gt[i]) == 1
    assert int(result.num_scored[i]) == 2
    assert ap_of(result, L3) == pytest.approx(0.5)


def test_negative_and_positive_labels_without_boxes_make_false_positives(hierarchy):
    # L3: image a has GT M, det 0.9 = M -> TP. Image b has a NEGATIVE label L3:
    # det 0.95 there is evaluated, no GT -> FP. Image c has a POSITIVE label L3
    # but no box: det 0.85 -> FP. Ranked FP, TP, FP -> precision 0, 1/2, 1/3 at
    # recall 0, 1, 1 -> AP 0.5.
    # L4: only a negative label (image a) and a det there -> FP, but L4 has no
    # ground truth anywhere -> excluded (NaN), mAP is over L3 alone.
    gt = make_gt(["a", "b", "c"], [("a", L3, rect(0, 5, 0, 5), None, False)],
                 labels=[("b", L3, 0), ("c", L3, 1), ("a", L4, 0)])
    dets = [("a", L3, 0.9, rect(0, 5, 0, 5)), ("b", L3, 0.95, rect(0, 5, 0, 5)),
            ("c", L3, 0.85, rect(0, 5, 0, 5)), ("a", L4, 0.9, rect(0, 5, 0, 5))]
    result = score(gt, dets, hierarchy)
    assert ap_of(result, L3) == pytest.approx(0.5)
    assert math.isnan(ap_of(result, L4))
    assert int(result.num_scored[CLASSES.index(L4)]) == 1
    assert result.mean_ap == pytest.approx(0.5)
    assert result.mean_ap_over(CLASSES)[1] == 1


def test_unannotated_class_and_unknown_image_are_ignored(hierarchy):
    # Image a: GT L3 (det 0.8 -> TP) and NO label nor box of L1: the L1 det 0.99
    # in image a is ignored. Image b: GT L1, det 0.7 -> TP. So AP(L1) = 1 (0.5 if
    # the image-a det counted). Image z is not in the ground truth: ignored.
    # Expansion copies L1's GT to P and G, which get no detection -> AP 0.
    gt = make_gt(["a", "b"], [("a", L3, rect(0, 5, 0, 5), None, False),
                              ("b", L1, rect(0, 5, 0, 5), None, False)])
    dets = [("a", L3, 0.8, rect(0, 5, 0, 5)), ("a", L1, 0.99, rect(0, 5, 0, 5)),
            ("b", L1, 0.7, rect(0, 5, 0, 5)), ("z", L1, 0.99, rect(0, 5, 0, 5))]
    result = score(gt, dets, hierarchy)
    assert ap_of(result, L1) == pytest.approx(1.0)
    assert ap_of(result, L3) == pytest.approx(1.0)
    assert ap_of(result, P) == 0.0 and ap_of(result, G) == 0.0
    assert int(result.num_scored[CLASSES.index(L1)]) == 1
    assert result.mean_ap == pytest.approx(0.5)  # (1 + 1 + 0 + 0) / 4


def test_empty_mask_detection_is_dropped(hierarchy):
    # An empty mask has a zero box: _remove_invalid_boxes drops it. Without that
    # the 0.99 det would be a FP and AP 0.5; with it, AP 1.
    gt = make_gt(["a"], [("a", L3, rect(0, 5, 0, 5), None, False)])
    dets = [("a", L3, 0.99, np.zeros((10, 10), np.uint8)), ("a", L3, 0.8, rect(0, 5, 0, 5))]
    result = score(gt, dets, hierarchy)
    assert ap_of(result, L3) == pytest.approx(1.0)
    assert int(result.num_scored[CLASSES.index(L3)]) == 1


def test_parent_prediction_scored_against_expanded_ground_truth(hierarchy):
    # Image a: GT L1 (positive label L1). Expanded: copies for P and G, labels
    # P and G positive. Det L1 0.9 = M -> TP for L1; det P 0.8 = M -> TP for P.
    # No det of G: predictions are NOT expanded, so AP(G) = 0 (num_gt 1).
    # Image b: negative label P -> expanded to its descendants L1 and L2
    # (negative). Det L1 0.95 in image b -> FP for L1: ranked FP, TP -> AP(L1) 0.5.
    # Det L2 0.9 in b: FP, but L2 has no GT -> excluded.
    gt = make_gt(["a", "b"], [("a", L1, rect(0, 5, 0, 5), None, False)],
                 labels=[("a", L1, 1), ("b", P, 0)])
    expanded = metric.expand_ground_truth(gt, hierarchy)
    assert sorted(expanded.inst_label) == sorted([L1, P, G])
    got = set(zip(expanded.label_image.tolist(), expanded.label_name, expanded.label_confidence.tolist()))
    assert got == {(0, L1, 1), (0, P, 1), (0, G, 1), (1, P, 0), (1, L1, 0), (1, L2, 0)}
    dets = [("a", L1, 0.9, rect(0, 5, 0, 5)), ("a", P, 0.8, rect(0, 5, 0, 5)),
            ("b", L1, 0.95, rect(0, 5, 0, 5)), ("b", L2, 0.9, rect(0, 5, 0, 5))]
    result = score(gt, dets, hierarchy)
    assert ap_of(result, P) == pytest.approx(1.0)
    assert ap_of(result, G) == 0.0
    assert ap_of(result, L1) == pytest.approx(0.5)
    assert math.isnan(ap_of(result, L2))
    assert int(result.num_scored[CLASSES.index(L2)]) == 1


def test_equal_scores_follow_tf_sort_order(hierarchy):
    # TF sorts with argsort(scores)[::-1]: among equal scores the LATER one comes
    # first (stable sort reversed), once per image and again per class.
    # Image a, GT M = rows 0-4 x cols 0-4; dets in submission order:
    #   dA 0.5 = rows 0-4 x cols 0-5 (IoU 25/30), dB 0.5 = M (IoU 1).
    # Per image: dB first -> TP on M; dA: best is M, taken -> FP.
    # Per class the list [dB TP, dA FP] is sorted again: reversed ties -> dA, dB:
    # ranked FP, TP -> AP 0.5; exactly one TP either way.
    gt = make_gt(["a"], [("a", L3, rect(0, 5, 0, 5), None, False)])
    result = score(gt, [("a", L3, 0.5, rect(0, 5, 0, 6)), ("a", L3, 0.5, rect(0, 5, 0, 5))],
                   hierarchy)
    assert ap_of(result, L3) == pytest.approx(0.5)
    assert int(result.num_tp[CLASSES.index(L3)]) == 1
    # Across images: a has a TP, b a FP, both 0.5. Concatenated in ImageID order
    # [a TP, b FP], then reversed ties -> b FP first -> AP(L3) = 0.5 (1 GT).
    # With the roles swapped (a FP, b TP) the TP ranks first -> AP 1.0.
    gt2 = make_gt(["a", "b"], [("a", L3, rect(0, 5, 0, 5), None, False)], labels=[("b", L3, 0)])
    r1 = score(gt2, [("a", L3, 0.5, rect(0, 5, 0, 5)), ("b", L3, 0.5, rect(0, 5, 0, 5))], hierarchy)
    assert ap_of(r1, L3) == pytest.approx(0.5)
    gt3 = make_gt(["a", "b"], [("b", L3, rect(0, 5, 0, 5), None, False)], labels=[("a", L3, 0)])
    r2 = score(gt3, [("a", L3, 0.5, rect(0, 5, 0, 5)), ("b", L3, 0.5, rect(0, 5, 0, 5))], hierarchy)
    assert ap_of(r2, L3) == pytest.approx(1.0)


def test_group_of_mask_matched_by_intersection_over_detection_area():
    # A group-of ground truth WITH a mask (pass 2): mask intersection over the
    # detection's mask area. GT group mask = rows 0-9 x cols 0-4. Det 1 = rows
    # 0-1 x cols 3-6 (8 px, 4 inside: ioa 0.5) -> ignored. Det 2 = rows 0-1 x
    # cols 4-7 (8 px, 2 inside: 0.25) -> FP (scored).
    gt_mask = metric.encode_mask(rect(0, 10, 0, 5))
    dets = [metric.encode_mask(rect(0, 2, 3, 7)), metric.encode_mask(rect(0, 2, 4, 8))]
    boxes = np.array([tight_box(rect(0, 2, 3, 7)), tight_box(rect(0, 2, 4, 8))])
    tp, scored = metric.match_image_class(dets, boxes, [gt_mask], np.array([tight_box(rect(0, 10, 0, 5))]),
                                          np.array([True]), np.array([True]))
    assert tp.tolist() == [False, False]
    assert scored.tolist() == [False, True]


def test_detection_mask_of_other_size_is_rejected(hierarchy):
    gt = metric.expand_ground_truth(make_gt(["a"], [("a", L3, rect(0, 5, 0, 5), None, False)]), hierarchy)
    dets = make_dets([("a", L3, 0.9, rect(0, 5, 0, 5, size=(20, 20)))])
    with pytest.raises(InputError, match="differs from the ground-truth image size"):
        metric.evaluate(gt, dets, CLASSES)


# --------------------------------------------------------------------------- end to end


def kaggle_mask(mask: np.ndarray) -> str:
    counts = metric.encode_mask(mask)["counts"]
    return base64.b64encode(zlib.compress(counts, 9)).decode("ascii")


# image -> (width, height); masks PNGs are written at HALF size, so the scorer
# must upscale them x2 (nearest) to the image size (block-exact with np.kron).
IMAGES = {"0a0000000000000a": (40, 30), "1b0000000000000b": (20, 20), "2c0000000000000c": (30, 20)}
# (image, label, box id, half-size mask (rows, cols) slices)
MASKS = [
    ("0a0000000000000a", L1, "b1", (slice(0, 10), slice(0, 8))),
    ("0a0000000000000a", L3, "b2", (slice(5, 15), slice(10, 20))),
    ("1b0000000000000b", L2, "b3", (slice(2, 8), slice(2, 8))),
    ("1b0000000000000b", L4, "b4", (slice(0, 4), slice(5, 10))),
    ("2c0000000000000c", L3, "b5", (slice(0, 10), slice(0, 15))),
]


def full_mask(image: str, region) -> np.ndarray:
    w, h = IMAGES[image]
    half = np.zeros((h // 2, w // 2), np.uint8)
    half[region] = 1
    return np.kron(half, np.ones((2, 2), np.uint8))


def write_dataset(folder: Path, *, zipped: bool) -> dict:
    hierarchy, classes = write_hierarchy(folder)
    images = folder / "images"
    images.mkdir()
    for image, (w, h) in IMAGES.items():
        cv2.imwrite(str(images / f"{image}.jpg"), np.full((h, w, 3), 127, np.uint8))
    mask_rows, bbox_rows, pngs = [], [], {}
    for image, label, box_id, region in MASKS:
        w, h = IMAGES[image]
        half = np.zeros((h // 2, w // 2), np.uint8)
        half[region] = 255
        name = f"{image}_{label.replace('/', '')}_{box_id}.png"
        pngs[name] = cv2.imencode(".png", half)[1].tobytes()
        ymin, xmin, ymax, xmax = tight_box(full_mask(image, region))
        mask_rows.append(f"{name},{image},{label},{box_id},{xmin},{xmax},{ymin},{ymax},0.9,")
        bbox_rows.append(f"{image},{label},{xmin},{xmax},{ymin},{ymax},0")
    # a box-only L3 box and a group-of L2 box in the first image (no masks)
    bbox_rows.append("0a0000000000000a,/m/l3,0.0,0.2,0.6,1.0,0")
    bbox_rows.append("0a0000000000000a,/m/l2,0.5,1.0,0.0,0.5,1")
    (folder / "masks.csv").write_text(
        "MaskPath,ImageID,LabelName,BoxID,BoxXMin,BoxXMax,BoxYMin,BoxYMax,PredictedIoU,Clicks\n"
        + "\n".join(mask_rows) + "\n")
    (folder / "bbox.csv").write_text("ImageID,LabelName,XMin,XMax,YMin,YMax,IsGroupOf\n"
                                     + "\n".join(bbox_rows) + "\n")
    (folder / "labels.csv").write_text(
        "ImageID,LabelName,Confidence\n0a0000000000000a,/m/l1,1\n1b0000000000000b,/m/l3,0\n")
    if zipped:
        mask_args = []
        for shard in "012":
            path = folder / f"challenge-2019-validation-masks-{shard}.zip"
            with zipfile.ZipFile(path, "w") as archive:
                for name, data in pngs.items():
                    if name.startswith(shard):
                        archive.writestr(name, data)
            mask_args.append(str(path))
    else:
        (folder / "pngs").mkdir()
        for name, data in pngs.items():
            (folder / "pngs" / name).write_bytes(data)
        mask_args = [str(folder / "pngs")]
    return {"hierarchy": hierarchy, "classes": classes, "masks": mask_args, "images": images}


def write_submission(path: Path, detections: dict[str, list[tuple[str, float, np.ndarray]]],
                     images=None) -> None:
    lines = ["ImageID,ImageWidth,ImageHeight,PredictionString"]
    for image, (w, h) in IMAGES.items():
        if images is not None and image not in images:
            continue
        triples = " ".join(f"{label} {s:.6f} {kaggle_mask(m)}" for label, s, m in detections.get(image, []))
        lines.append(f"{image},{w},{h},{triples}")
    path.write_text("\n".join(lines) + "\n")


def perfect_detections(hierarchy) -> dict:
    """One detection per GT mask for its class and for each ancestor."""
    out: dict = {}
    for image, label, _, region in MASKS:
        mask = full_mask(image, region)
        for mid in (label, *hierarchy.ancestors[label]):
            out.setdefault(image, []).append((mid, 0.9, mask))
    return out


def load_script():
    spec = importlib.util.spec_from_file_location("evaluate_script", ROOT / "scripts" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cli_args(data: dict, folder: Path, submission: Path, *extra: str) -> list[str]:
    return ["--submission", str(submission), "--hierarchy", str(data["hierarchy"]),
            "--classes", str(data["classes"]), "--masks-csv", str(folder / "masks.csv"),
            "--bbox-csv", str(folder / "bbox.csv"), "--labels-csv", str(folder / "labels.csv"),
            "--masks", *data["masks"], "--images", str(data["images"]),
            "--out-json", str(folder / "out" / "x.json"), "--out-csv", str(folder / "out" / "x.per_class.csv"),
            *extra]


@pytest.mark.parametrize("zipped", [False, True])
def test_evaluate_script_perfect_submission_scores_one(tmp_path, hierarchy, zipped, capsys):
    data = write_dataset(tmp_path, zipped=zipped)
    submission = tmp_path / "perfect.csv"
    write_submission(submission, perfect_detections(hierarchy))
    load_script().main(cli_args(data, tmp_path, submission, "--name", "perfect"))
    summary = json.loads((tmp_path / "out" / "x.json").read_text())
    # classes with mask GT: L1 L2 L3 L4 and (expanded) P, G -> 6 classes, all AP 1
    assert summary["mAP"] == pytest.approx(1.0)
    assert summary["num_classes_scored"] == 6
    assert summary["leaf_mAP"] == pytest.approx(1.0) and summary["num_leaf_classes_scored"] == 4
    assert summary["parent_mAP"] == pytest.approx(1.0) and summary["num_parent_classes_scored"] == 2
    per_class = {row["LabelName"]: row for row in summary["per_class"]}
    # L3: two masks (box-only L3 box not counted); G: copies of L1, L2, L4 masks
    assert per_class[L3]["num_gt"] == 2 and per_class[G]["num_gt"] == 3
    assert summary["name"] == "perfect"
    rows = (tmp_path / "out" / "x.per_class.csv").read_text().splitlines()
    assert rows[0] == "LabelName,DisplayName,AP,num_gt,kind"
    assert f"{G},Name g,1.000000,3,grandparent" in rows
    assert "mAP 1.0000 over 6 classes" in capsys.readouterr().out


def test_evaluate_script_imperfect_and_restricted(tmp_path, hierarchy):
    data = write_dataset(tmp_path, zipped=False)
    dets = perfect_detections(hierarchy)
    # in image 1b, L3 has a NEGATIVE label: a L3 det there is a FP ranked first
    # (0.95): L3 has 2 GT -> ranked FP, TP, TP -> precision 0, 1/2, 2/3 at recall
    # 0, 1/2, 1; the envelope lifts 1/2 to 2/3 -> AP = 1/2 * 2/3 + 1/2 * 2/3 = 2/3.
    dets["1b0000000000000b"].append((L3, 0.95, full_mask("1b0000000000000b", (slice(0, 5), slice(0, 5)))))
    submission = tmp_path / "sub.csv"
    write_submission(submission, dets)
    load_script().main(cli_args(data, tmp_path, submission))
    summary = json.loads((tmp_path / "out" / "x.json").read_text())
    per_class = {row["LabelName"]: row for row in summary["per_class"]}
    assert per_class[L3]["AP"] == pytest.approx(2 / 3)
    assert summary["leaf_mAP"] == pytest.approx((3 + 2 / 3) / 4)
    # held-out list without image 1b: the FP is gone, L2/L4 lose their only GT
    # (the submission has exactly the listed images, as the validator requires)
    ids = tmp_path / "heldout.csv"
    ids.write_text("ImageID\n0a0000000000000a\n2c0000000000000c\n")
    write_submission(submission, dets, images={"0a0000000000000a", "2c0000000000000c"})
    load_script().main(cli_args(data, tmp_path, submission, "--image-ids", str(ids)))
    summary = json.loads((tmp_path / "out" / "x.json").read_text())
    per_class = {row["LabelName"]: row for row in summary["per_class"]}
    assert per_class[L3]["AP"] == pytest.approx(1.0)
    assert per_class[L2]["AP"] is None and per_class[L4]["AP"] is None
    assert summary["num_classes_scored"] == 4  # L1, L3, P, G
    assert summary["num_images"] == 2


def test_evaluate_script_resizes_masks_of_another_declared_size(tmp_path, hierarchy):
    # The submission declares half the image size; masks are resized (nearest)
    # to the ground-truth size, which the x2 block masks survive exactly.
    data = write_dataset(tmp_path, zipped=False)
    lines = ["ImageID,ImageWidth,ImageHeight,PredictionString"]
    for image, (w, h) in IMAGES.items():
        triples = []
        for img, label, _, region in MASKS:
            if img == image:
                half = np.zeros((h // 2, w // 2), np.uint8)
                half[region] = 1
                for mid in (label, *hierarchy.ancestors[label]):
                    triples.append(f"{mid} 0.5 {kaggle_mask(half)}")
        lines.append(f"{image},{w // 2},{h // 2},{' '.join(triples)}")
    submission = tmp_path / "half.csv"
    submission.write_text("\n".join(lines) + "\n")
    load_script().main(cli_args(data, tmp_path, submission, "--resize-masks"))
    assert json.loads((tmp_path / "out" / "x.json").read_text())["mAP"] == pytest.approx(1.0)
    # without --resize-masks it is not a valid submission, as for the validator
    (tmp_path / "out" / "x.json").unlink()
    assert run_cli(load_script().main, cli_args(data, tmp_path, submission)) == 2
    assert not (tmp_path / "out" / "x.json").exists()


def test_evaluate_script_bad_inputs_exit_2_without_output(tmp_path, hierarchy, capsys):
    data = write_dataset(tmp_path, zipped=False)
    submission = tmp_path / "bad.csv"
    submission.write_text("ImageID,ImageWidth,ImageHeight,PredictionString\n"
                          "0a0000000000000a,40,30,/m/l1 0.5\n")
    script = load_script()
    assert run_cli(script.main, cli_args(data, tmp_path, submission)) == 2
    assert "row 2 / 0a0000000000000a" in capsys.readouterr().err  # header = row 1
    submission.write_text("ImageID,ImageWidth,ImageHeight,PredictionString\n"
                          "0a0000000000000a,40,30,/m/zz 0.5 eJwLAAAA\n")
    assert run_cli(script.main, cli_args(data, tmp_path, submission)) == 2
    assert "unknown class '/m/zz'" in capsys.readouterr().err
    submission.write_text("ImageID,ImageWidth,ImageHeight,PredictionString\n"
                          "0a0000000000000a,40,30,/m/l1 0.5 @@notbase64@@\n")
    assert run_cli(script.main, cli_args(data, tmp_path, submission)) == 2
    assert "EncodedMask" in capsys.readouterr().err
    # an RLE of a 20 x 20 mask declared as 40 x 30
    submission.write_text("ImageID,ImageWidth,ImageHeight,PredictionString\n"
                          f"0a0000000000000a,40,30,/m/l1 0.5 {kaggle_mask(rect(0, 5, 0, 5, (20, 20)))}\n")
    assert run_cli(script.main, cli_args(data, tmp_path, submission)) == 2
    assert "covers 400 pixels" in capsys.readouterr().err
    # a listed image without a row (issue 18: the scorer used to score it as
    # an image without detections; the validator rejects it)
    write_submission(submission, perfect_detections(hierarchy), images={"0a0000000000000a"})
    assert run_cli(script.main, cli_args(data, tmp_path, submission)) == 2
    assert "ImageID 1b0000000000000b (in the image list of the ground truth) is missing" in \
        capsys.readouterr().err
    # a mask PNG missing from the archives
    next(Path(data["masks"][0]).glob("1b*.png")).unlink()
    write_submission(submission, perfect_detections(hierarchy))
    assert run_cli(script.main, cli_args(data, tmp_path, submission)) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "out" / "x.json").exists()
    assert not (tmp_path / "out" / "x.per_class.csv").exists()


# --------------------------------------------------------------------------- fidelity (issue 12)


def write_small_gt(folder: Path, image: str, size: tuple[int, int], masks, boxes) -> tuple:
    """One image of ``size`` (w, h): ``masks`` = (label, box id, PNG array (0/1),
    box xmin, xmax, ymin, ymax) rows, ``boxes`` = bbox rows (label, xmin, xmax,
    ymin, ymax, group_of). Returns load_ground_truth's arguments (no JPEG: size_lookup)."""
    hierarchy_json, classes_csv = write_hierarchy(folder)
    (folder / "pngs").mkdir()
    mask_rows = []
    for label, box_id, png, *box in masks:
        name = f"{image}_{label.replace('/', '')}_{box_id}.png"
        cv2.imwrite(str(folder / "pngs" / name), (np.asarray(png, np.uint8) * 255))
        mask_rows.append(f"{name},{image},{label},{box_id},{box[0]},{box[1]},{box[2]},{box[3]},0.9,")
    (folder / "masks.csv").write_text(
        "MaskPath,ImageID,LabelName,BoxID,BoxXMin,BoxXMax,BoxYMin,BoxYMax,PredictedIoU,Clicks\n"
        + "".join(r + "\n" for r in mask_rows))
    (folder / "bbox.csv").write_text("ImageID,LabelName,XMin,XMax,YMin,YMax,IsGroupOf\n" + "".join(
        f"{image},{label},{x0},{x1},{y0},{y1},{g}\n" for label, x0, x1, y0, y1, g in boxes))
    (folder / "labels.csv").write_text(f"ImageID,LabelName,Confidence\n{image},{L1},0\n")
    w, h = size
    return (folder / "masks.csv", folder / "bbox.csv", folder / "labels.csv",
            load_hierarchy(hierarchy_json, classes_csv), [folder / "pngs"], folder,
            lambda ids: (np.full(len(ids), w), np.full(len(ids), h)))


def _load_gt(args) -> metric.GroundTruth:
    *positional, lookup = args
    return metric.load_ground_truth(*positional, size_lookup=lookup)


# A 2 x 2 mask PNG with only pixel (row 1, col 1) set, at a 3 x 3 image.
# Nearest at pixel centres maps output x to input floor((x + 0.5) * 2 / 3):
# x = 0, 1, 2 -> 0, 1, 1, so the mask becomes rows 1-2 x cols 1-2 (4 pixels).
# cv2.INTER_NEAREST maps floor(x * 2 / 3): 0, 0, 1 -> only pixel (2, 2).
CORNER_2X2 = np.array([[0, 0], [0, 1]], np.uint8)
BLOCK_3X3 = np.array([[0, 0, 0], [0, 1, 1], [0, 1, 1]], np.uint8)


def test_mask_resize_samples_pixel_centres():
    png = cv2.imencode(".png", CORNER_2X2 * 255)[1].tobytes()
    got = metric.mask_utils.decode(metric.load_mask_rle(png, "m.png", 3, 3))
    assert got.tolist() == BLOCK_3X3.tolist()
    got = metric.mask_utils.decode(metric.resize_rle(metric.encode_mask(CORNER_2X2), 3, 3))
    assert got.tolist() == BLOCK_3X3.tolist()
    # PIL's nearest agrees (the convention of the official evaluator's tools)
    from PIL import Image
    pil = np.asarray(Image.fromarray(CORNER_2X2).resize((3, 3), Image.NEAREST))
    assert pil.tolist() == BLOCK_3X3.tolist()


def test_ground_truth_png_of_another_size_scored_at_pixel_centres(tmp_path, hierarchy):
    # GT: L3 mask PNG 2 x 2 (CORNER_2X2) at a 3 x 3 image -> the 4-pixel block
    # rows/cols 1-2. Detection: the L-shape (1,1), (1,2), (2,1): intersection 3,
    # union 4 -> IoU 3/4 >= 0.5 -> TP, AP 1.0. (With INTER_NEAREST the GT would
    # be pixel (2, 2) alone: IoU 0 -> FP, AP 0.0.)
    image = "3d0000000000000d"
    args = write_small_gt(tmp_path, image, (3, 3), [(L3, "b1", CORNER_2X2, 1 / 3, 1.0, 1 / 3, 1.0)],
                          [(L3, 1 / 3, 1.0, 1 / 3, 1.0, 0)])
    gt = _load_gt(args)
    assert metric.mask_utils.decode(gt.inst_rle[0]).tolist() == BLOCK_3X3.tolist()
    l_shape = BLOCK_3X3.copy()
    l_shape[2, 2] = 0
    result = metric.evaluate(metric.expand_ground_truth(gt, hierarchy),
                             make_dets([(image, L3, 0.9, l_shape)]), CLASSES)
    assert ap_of(result, L3) == 1.0


def test_submission_mask_of_another_size_resized_at_pixel_centres(tmp_path, hierarchy):
    # GT: the 3 x 3 block (PNG at the image size). The submission declares 2 x 2
    # and sends CORNER_2X2: resized at pixel centres it is the block itself ->
    # IoU 1 -> TP, AP 1.0 (INTER_NEAREST: pixel (2, 2), IoU 1/4 -> FP, AP 0.0).
    image = "3d0000000000000d"
    args = write_small_gt(tmp_path, image, (3, 3), [(L3, "b1", BLOCK_3X3, 1 / 3, 1.0, 1 / 3, 1.0)],
                          [(L3, 1 / 3, 1.0, 1 / 3, 1.0, 0)])
    gt = _load_gt(args)
    sub = tmp_path / "sub.csv"
    sub.write_text(f"ImageID,ImageWidth,ImageHeight,PredictionString\n"
                   f"{image},2,2,{L3} 0.9 {kaggle_mask(CORNER_2X2)}\n")
    with pytest.raises(InputError, match=r"row 2 / 3d0000000000000d: declared size .* = 2 x 2, "
                                         r"but the image is 3 x 3"):
        metric.read_submission(sub, gt, CLASSES)
    dets = metric.read_submission(sub, gt, CLASSES, resize=True)
    assert metric.mask_utils.decode(metric.unpack_rle(dets.rle[0])).tolist() == BLOCK_3X3.tolist()
    result = metric.evaluate(metric.expand_ground_truth(gt, hierarchy), dets, CLASSES)
    assert ap_of(result, L3) == 1.0


# --------------------------------------------------------------------------- the box/mask join (issue 18 item 10)


def _load_gt_join(args, join: str, log=None) -> metric.GroundTruth:
    *positional, lookup = args
    return metric.load_ground_truth(*positional, size_lookup=lookup, join=join, log=log)


@pytest.mark.parametrize("join, expected", [("official", 5 / 12), ("tolerant", 5 / 6)])
def test_identical_boxes_join_k_by_m(tmp_path, hierarchy, join, expected):
    # Image 10 x 10; two L3 objects annotated with the SAME box (the whole
    # image): two bbox rows and two mask rows with equal coordinates. Masks:
    # m0 = left half (cols 0-4), m1 = right half (cols 5-9). Detections:
    #   d1 0.9 cols 0-4, d2 0.8 cols 0-5 (IoU 50/60 with m0, 10/100 with m1),
    #   d3 0.7 cols 5-9.
    # official (merge_boxes_and_masks: pandas outer merge, 2 x 2 rows under
    # one key): 4 instances (b0,m0) (b0,m1) (b1,m0) (b1,m1) -> masks m0 m1 m0
    # m1, num_gt 4. d1: IoU 1 with both m0 copies, argmax the first -> TP.
    # d2: best m0 (first copy) taken -> FP. d3: best m1 (first copy) -> TP.
    # Ranked TP FP TP: precision 1, 1/2, 2/3 at recall 1/4, 1/4, 2/4; envelope
    # 1, 2/3, 2/3 -> AP = 1/4 * 1 + 1/4 * 2/3 = 5/12 = 0.4167.
    # tolerant (one to one): 2 instances m0, m1, num_gt 2; same TP FP TP at
    # recall 1/2, 1/2, 1 -> AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    image = "3d0000000000000d"
    masks = [(L3, "b1", rect(0, 10, 0, 5), 0.0, 1.0, 0.0, 1.0),
             (L3, "b2", rect(0, 10, 5, 10), 0.0, 1.0, 0.0, 1.0)]
    boxes = [(L3, 0.0, 1.0, 0.0, 1.0, 0), (L3, 0.0, 1.0, 0.0, 1.0, 0)]
    args = write_small_gt(tmp_path, image, (10, 10), masks, boxes)
    log: list[str] = []
    gt = metric.expand_ground_truth(_load_gt_join(args, join, log.append), hierarchy)
    assert len(gt.inst_rle) == (4 if join == "official" else 2)
    assert all(r is not None for r in gt.inst_rle)
    result = metric.evaluate(gt, make_dets([
        (image, L3, 0.9, rect(0, 10, 0, 5)), (image, L3, 0.8, rect(0, 10, 0, 6)),
        (image, L3, 0.7, rect(0, 10, 5, 10))]), CLASSES)
    assert int(result.num_gt[CLASSES.index(L3)]) == (4 if join == "official" else 2)
    assert ap_of(result, L3) == pytest.approx(expected, abs=1e-12)
    if join == "official":  # the report says what the join did, with counts
        assert any("1 keys (ImageID, LabelName, box, IsGroupOf) have several bbox and/or mask "
                   "rows (2 bbox rows, 2 mask rows): the official join makes 4" in line
                   for line in log), log


@pytest.mark.parametrize("mask_xmax, join, expected", [
    ("0.5", "official", 0.5),         # same text: joined
    ("0.50", "official", 0.5),        # other text, same parsed float: joined
    ("0.50000001", "official", 1.0),  # last digits differ: NOT joined (exact floats)
    ("0.50000001", "tolerant", 0.5),  # within 1e-5: paired
])
def test_last_digit_coordinates_are_not_joined(tmp_path, hierarchy, mask_xmax, join, expected):
    # Image 10 x 10, one L3 object: mask M = cols 0-4 (50 px), bbox row XMax
    # 0.5, mask row BoxXMax as given. Detections: dB 0.95 = columns 0 and 4
    # only (20 px inside M: mask IoU 20/50 = 0.4; its tight box is M's box),
    # dA 0.9 = M.
    # Joined (one instance with box and mask, num_gt 1): dB FP (IoU 0.4), dA
    # TP -> precision 0, 1/2 at recall 0, 1 -> AP 0.5.
    # Not joined (official on unequal floats): a mask-only ground truth M
    # (counted, num_gt 1) and a box-only ground truth [0, 0, 1, 0.5]. dB: no
    # mask match; box IoU 1 with the box-only ground truth -> ignored (first
    # hit). dA: TP -> AP 1.0.
    image = "3d0000000000000d"
    masks = [(L3, "b1", rect(0, 10, 0, 5), 0.0, mask_xmax, 0.0, 1.0)]
    boxes = [(L3, 0.0, 0.5, 0.0, 1.0, 0)]
    args = write_small_gt(tmp_path, image, (10, 10), masks, boxes)
    log: list[str] = []
    gt = metric.expand_ground_truth(_load_gt_join(args, join, log.append), hierarchy)
    frame = np.zeros((10, 10), np.uint8)
    frame[:, [0, 4]] = 1
    result = metric.evaluate(gt, make_dets([(image, L3, 0.95, frame),
                                            (image, L3, 0.9, rect(0, 10, 0, 5))]), CLASSES)
    assert int(result.num_gt[CLASSES.index(L3)]) == 1
    assert ap_of(result, L3) == pytest.approx(expected)
    near = [line for line in log if "within 1e-05" in line]
    assert bool(near) == (expected == 1.0), log


def test_join_follows_the_hierarchy_expansion(tmp_path, hierarchy):
    # L1 and L2 (both under P, under G) annotated with the same box in one
    # image, each with its mask: m1 = cols 0-4, m2 = cols 5-9. The official
    # evaluator expands the bbox CSV and the masks CSV first, then merges: the
    # key (P, box) has 2 bbox rows and 2 mask rows -> 4 instances of P (and
    # of G); L1 and L2 one each. A perfect submission for P (m1, m2):
    # num_gt(P) = 4, 2 TP at recall 1/4, 2/4 -> AP(P) = 1/2 (1.0 if joined
    # before the expansion).
    image = "3d0000000000000d"
    masks = [(L1, "b1", rect(0, 10, 0, 5), 0.0, 1.0, 0.0, 1.0),
             (L2, "b2", rect(0, 10, 5, 10), 0.0, 1.0, 0.0, 1.0)]
    boxes = [(L1, 0.0, 1.0, 0.0, 1.0, 0), (L2, 0.0, 1.0, 0.0, 1.0, 0)]
    args = write_small_gt(tmp_path, image, (10, 10), masks, boxes)
    gt = metric.expand_ground_truth(_load_gt_join(args, "official"), hierarchy)
    counts = {c: int((gt.inst_label == c).sum()) for c in (L1, L2, P, G)}
    assert counts == {L1: 1, L2: 1, P: 4, G: 4}
    result = metric.evaluate(gt, make_dets([(image, P, 0.9, rect(0, 10, 0, 5)),
                                            (image, P, 0.8, rect(0, 10, 5, 10))]), CLASSES)
    assert ap_of(result, P) == pytest.approx(0.5)


def test_repeated_and_conflicting_ground_truth_rows_are_reported(tmp_path, hierarchy, capsys):
    # masks CSV: a second mask file (b6, a copy of b5) for the L3 box of 2c
    # (a repeated MaskPath is an error of the reader); bbox CSV: that box
    # twice and a repeated box-only row; labels: L1 both 1 and 0, twice.
    # Scored as the official code does: the key (L3, box) has 2 bbox rows x 2
    # mask rows = 4 instances of the same mask -> num_gt 4; one perfect
    # detection: TP at recall 1/4 -> AP 0.25. The log counts each case.
    data = write_dataset(tmp_path, zipped=False)
    masks_csv, bbox_csv, labels_csv = (tmp_path / n for n in ("masks.csv", "bbox.csv", "labels.csv"))
    mask_lines = masks_csv.read_text().splitlines()
    l3 = next(line for line in mask_lines if "2c0000000000000c" in line)
    png = Path(data["masks"][0]) / l3.split(",")[0]
    (png.parent / png.name.replace("_b5", "_b6")).write_bytes(png.read_bytes())
    masks_csv.write_text("\n".join([*mask_lines, l3.replace("b5", "b6")]) + "\n")
    bbox_lines = bbox_csv.read_text().splitlines()
    l3_box = next(line for line in bbox_lines if line.startswith("2c0000000000000c"))
    bbox_csv.write_text("\n".join([*bbox_lines, l3_box, bbox_lines[-2]]) + "\n")
    labels_csv.write_text(labels_csv.read_text() + "0a0000000000000a,/m/l1,0\n"
                          "0a0000000000000a,/m/l1,0\n")
    dets = perfect_detections(hierarchy)
    submission = tmp_path / "sub.csv"
    write_submission(submission, dets)
    load_script().main(cli_args(data, tmp_path, submission))
    err = capsys.readouterr().err
    assert "bbox.csv: 2 rows repeat an earlier row (ImageID, LabelName, box, IsGroupOf)" in err
    assert "labels.csv: 1 rows repeat an earlier row" in err
    assert "labels.csv: 1 (ImageID, LabelName) have both Confidence 1 and 0" in err
    assert "the official join makes 4 ground-truth instances" in err
    per_class = {r["LabelName"]: r for r in json.loads((tmp_path / "out" / "x.json").read_text())["per_class"]}
    # L3: the 0a mask (1 GT) + 4 copies of the 2c mask = 5 GT; the two perfect
    # detections (0a, 2c) are TP at recall 1/5, 2/5 -> AP 0.4
    assert per_class[L3]["num_gt"] == 5
    assert per_class[L3]["AP"] == pytest.approx(0.4)


def test_pairing_is_greedy_one_to_one_closest_first():
    # box rows b0, b1 (same image/class), mask rows m0, m1, m2:
    # |b0 - m0| = 0, |b0 - m1| = 0, |b1 - m0| = 0, |b1 - m1| = 0, m2 differs by 2e-6 from b1.
    # Greedy in (distance, row order): (b0, m0), then (b1, m1); m2 stays unpaired.
    bbox = pd_frame({"ImageID": ["a"] * 2, "LabelName": [L3] * 2, "XMin": [0.1, 0.1],
                     "XMax": [0.5, 0.5], "YMin": [0.2, 0.2], "YMax": [0.6, 0.6]})
    masks = pd_frame({"ImageID": ["a"] * 3, "LabelName": [L3] * 3, "BoxXMin": [0.1, 0.1, 0.1],
                      "BoxXMax": [0.5, 0.5, 0.5], "BoxYMin": [0.2, 0.2, 0.2],
                      "BoxYMax": [0.6, 0.6, 0.600002]})
    b, m = metric._pair_masks_with_boxes(bbox, masks)
    assert sorted(zip(b.tolist(), m.tolist())) == [(0, 0), (1, 1)]


def pd_frame(columns: dict):
    import pandas as pd
    return pd.DataFrame(columns)
