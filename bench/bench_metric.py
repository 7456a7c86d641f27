"""Benchmark of the OID instance-segmentation metric (oidseg.metric).

Synthetic validation set (default 10,000 images of about 1024 x 768, 120
detections each, written as a Kaggle CSV with real base64(zlib(RLE)) masks):
times reading the submission and scoring it (target: at most 5 CPU-minutes
for 10,000 x 120), then the ground-truth mask loading (PNG from a zip ->
nearest resize -> RLE) on a sample, extrapolated per 10,000 masks.

    PYTHONPATH=. .venv/bin/python bench/bench_metric.py [--images 10000] [--dets 120]
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oidseg import metric  # noqa: E402
from oidseg.hierarchy import Hierarchy  # noqa: E402


def synthetic_hierarchy(num_leaves: int = 275, num_parents: int = 25) -> Hierarchy:
    """Flat two-level hierarchy: each leaf under one of the parents."""
    parents = [f"/m/p{i:03d}" for i in range(num_parents)]
    leaves = [f"/m/l{i:03d}" for i in range(num_leaves)]
    classes = tuple(parents + leaves)
    parent_of = {leaf: parents[i % num_parents] for i, leaf in enumerate(leaves)}
    children = {p: tuple(l for l in leaves if parent_of[l] == p) for p in parents}
    return Hierarchy(
        classes=classes, names={c: c for c in classes},
        parents={**{p: () for p in parents}, **{l: (parent_of[l],) for l in leaves}},
        children={**children, **{l: () for l in leaves}},
        ancestors={**{p: () for p in parents}, **{l: (parent_of[l],) for l in leaves}},
        descendants={**children, **{l: () for l in leaves}},
    )


def polygons(rng: np.random.Generator, shapes: np.ndarray) -> list[list[float]]:
    """Random 16-gons around ellipses ``shapes[k] = (cx, cy, rx, ry)``."""
    angles = np.sort(rng.uniform(0, 2 * np.pi, (len(shapes), 16)), axis=1)
    radius = rng.uniform(0.8, 1.0, (len(shapes), 16))
    xs = shapes[:, :1] + shapes[:, 2:3] * radius * np.cos(angles)
    ys = shapes[:, 1:2] + shapes[:, 3:4] * radius * np.sin(angles)
    return np.stack([xs, ys], axis=2).reshape(len(shapes), -1).tolist()


def random_shapes(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    rx, ry = rng.uniform(0.03, 0.25, n) * w, rng.uniform(0.03, 0.25, n) * h
    return np.stack([rng.uniform(rx, w - rx), rng.uniform(ry, h - ry), rx, ry], axis=1)


def make_dataset(num_images: int, dets_per_image: int, hierarchy: Hierarchy, out_csv: Path, seed: int = 0):
    """Ground truth (in memory, RLE) and a Kaggle submission CSV."""
    rng = np.random.default_rng(seed)
    leaves = np.asarray(hierarchy.leaf_classes, dtype=object)
    image_ids = np.asarray([f"{i:016x}" for i in range(num_images)], dtype=object)
    heights = rng.choice([683, 768, 1024], num_images)
    widths = np.where(heights == 1024, rng.choice([683, 768, 1024], num_images), 1024)
    inst_image, inst_label, inst_box, inst_group, inst_rle = [], [], [], [], []
    lab_image, lab_name, lab_conf = [], [], []
    lines = ["ImageID,ImageWidth,ImageHeight,PredictionString"]
    for i in range(num_images):
        h, w = int(heights[i]), int(widths[i])
        gt_classes = rng.choice(leaves, rng.integers(2, 6), replace=False)
        poly_labels = np.repeat(gt_classes, rng.integers(1, 5, len(gt_classes)))
        shapes = random_shapes(rng, len(poly_labels), h, w)
        rles = mask_utils.frPyObjects(polygons(rng, shapes), h, w)
        boxes = mask_utils.toBbox(rles)
        for cls, rle, (x, y, bw, bh) in zip(poly_labels, rles, boxes):
            inst_image.append(i)
            inst_label.append(cls)
            inst_box.append([y / h, x / w, (y + bh) / h, (x + bw) / w])
            inst_group.append(False)
            inst_rle.append(rle)
        # one box-only and one group-of box, labels: positives + 2 negatives
        for group in (False, True):
            y0, x0 = rng.uniform(0, 0.5, 2)
            inst_image.append(i)
            inst_label.append(gt_classes[0])
            inst_box.append([y0, x0, y0 + 0.4, x0 + 0.4])
            inst_group.append(group)
            inst_rle.append(None)
        for cls in gt_classes:
            lab_image.append(i), lab_name.append(cls), lab_conf.append(1)
        for cls in rng.choice(leaves, 2, replace=False):
            lab_image.append(i), lab_name.append(cls), lab_conf.append(0)
        # detections: jittered copies of the ground truth, then random classes
        n_true = min(3 * len(shapes), dets_per_image)
        pick = np.arange(n_true) % len(shapes)
        jitter = rng.normal(0, 0.15, (n_true, 4))
        near = shapes[pick] + np.stack([jitter[:, 0] * shapes[pick, 2], jitter[:, 1] * shapes[pick, 3],
                                        jitter[:, 2] * shapes[pick, 2], jitter[:, 3] * shapes[pick, 3]], axis=1)
        n_rand = dets_per_image - n_true
        rand_labels = np.where(rng.random(n_rand) < 0.7, rng.choice(leaves, n_rand),
                               rng.choice(gt_classes, n_rand))
        det_labels = np.concatenate([poly_labels[pick], rand_labels])
        det_rles = mask_utils.frPyObjects(
            polygons(rng, np.concatenate([near, random_shapes(rng, n_rand, h, w)])), h, w)
        scores = rng.uniform(0.05, 1.0, dets_per_image)
        triples = " ".join(
            f"{label} {s:.6f} {base64.b64encode(zlib.compress(r['counts'], 9)).decode()}"
            for label, s, r in zip(det_labels, scores, det_rles))
        lines.append(f"{image_ids[i]},{w},{h},{triples}")
    out_csv.write_text("\n".join(lines) + "\n")
    gt = metric.GroundTruth(
        image_ids=image_ids, heights=heights.astype(np.int64), widths=widths.astype(np.int64),
        inst_image=np.asarray(inst_image, np.int64), inst_label=np.asarray(inst_label, object),
        inst_box=np.asarray(inst_box, np.float64), inst_group_of=np.asarray(inst_group, bool),
        inst_rle=inst_rle, label_image=np.asarray(lab_image, np.int64),
        label_name=np.asarray(lab_name, object), label_confidence=np.asarray(lab_conf, np.int8))
    return gt


def bench_mask_loading(num_masks: int = 300, seed: int = 1) -> float:
    """Seconds per ground-truth mask: PNG read from a zip, resize, RLE."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        archive_path = Path(tmp) / "challenge-2019-validation-masks-0.zip"
        names = []
        with zipfile.ZipFile(archive_path, "w") as archive:
            for k in range(num_masks):
                mask = np.zeros((rng.integers(400, 1000), rng.integers(400, 1000)), np.uint8)
                cv2.ellipse(mask, (mask.shape[1] // 2, mask.shape[0] // 2),
                            (mask.shape[1] // 4, mask.shape[0] // 3), 0, 0, 360, 255, -1)
                names.append(f"0{k:015x}_m0abc_{k}.png")
                archive.writestr(names[-1], cv2.imencode(".png", mask)[1].tobytes())
        source = metric.MaskSource([archive_path])
        start = time.process_time()
        for name in names:
            metric.load_mask_rle(source.read(name), name, 768, 1024)
        seconds = time.process_time() - start
        source.close()
    return seconds / num_masks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--dets", type=int, default=120)
    args = parser.parse_args(argv)
    hierarchy = synthetic_hierarchy()
    with tempfile.TemporaryDirectory() as tmp:
        submission = Path(tmp) / "submission.csv"
        t0 = time.perf_counter()
        gt = make_dataset(args.images, args.dets, hierarchy, submission)
        print(f"synthetic data: {args.images} images x {args.dets} detections, "
              f"{len(gt.inst_label)} GT rows, CSV {submission.stat().st_size / 1e6:.0f} MB "
              f"({time.perf_counter() - t0:.0f} s to generate, not timed)")

        cpu0, wall0 = time.process_time(), time.perf_counter()
        expanded = metric.expand_ground_truth(gt, hierarchy)
        cpu1, wall1 = time.process_time(), time.perf_counter()
        detections = metric.read_submission(submission, expanded, hierarchy.classes)
        cpu2, wall2 = time.process_time(), time.perf_counter()
        result = metric.evaluate(expanded, detections, hierarchy.classes)
        cpu3, wall3 = time.process_time(), time.perf_counter()
    total_cpu = cpu3 - cpu0
    print(f"expand ground truth : {cpu1 - cpu0:7.1f} CPU-s ({wall1 - wall0:.1f} s wall)")
    print(f"read submission     : {cpu2 - cpu1:7.1f} CPU-s ({wall2 - wall1:.1f} s wall), "
          f"{len(detections)} detections")
    print(f"evaluate            : {cpu3 - cpu2:7.1f} CPU-s ({wall3 - wall2:.1f} s wall), "
          f"{result.extra['num_detections_evaluated']} detections scored or ignored by rule")
    print(f"total               : {total_cpu:7.1f} CPU-s = {total_cpu / 60:.2f} CPU-min "
          f"({total_cpu / max(len(detections), 1) * 1e6:.0f} us per detection); target <= 5 CPU-min "
          f"for 10,000 x 120")
    print(f"mAP {result.mean_ap:.4f} over {result.mean_ap_over(result.classes)[1]} classes")
    per_mask = bench_mask_loading()
    print(f"ground-truth masks (PNG in zip -> resize 1024x768 -> RLE): {per_mask * 1e3:.2f} CPU-ms "
          f"per mask = {per_mask * 1e4:.0f} CPU-s per 10,000 masks")


if __name__ == "__main__":
    main()
