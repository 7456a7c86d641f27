"""Score a Kaggle-format submission with the OID Challenge 2019 instance
segmentation metric (SPEC section 8, ``oidseg.metric``).

Writes ``--out-json`` (mAP, leaf mAP, parent mAP, per-class AP and counts)
and ``--out-csv`` (``LabelName,DisplayName,AP,num_gt,kind``), both atomically,
and with ``--out-pr`` the per-class precision/recall arrays the AP comes from
(``.npz``, ``oidseg.visualize.write_pr_curves``; the report's PR curves).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oidseg import metric, validity  # noqa: E402
from oidseg.visualize import write_pr_curves  # noqa: E402
from oidseg.errors import atomic_write_text, run_cli  # noqa: E402
from oidseg.hierarchy import Hierarchy, load_hierarchy  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--submission", required=True, help="Kaggle CSV ImageID,ImageWidth,ImageHeight,PredictionString")
    metric.add_ground_truth_arguments(parser)
    parser.add_argument("--images", required=True, help="folder of {ImageID}.jpg (sizes from headers)")
    parser.add_argument("--image-ids", default=None,
                        help="CSV with an ImageID column: evaluate only these images (the "
                        "submission must have exactly these rows; without it, exactly the "
                        "images of the ground-truth files)")
    parser.add_argument("--box-join", choices=metric.JOINS, default="official",
                        help="how bbox rows and mask rows become ground truth: 'official' "
                        "(the metric: the TF evaluator's exact outer merge, k x m instances "
                        "per key) or 'tolerant' (one to one within 1e-5; not the metric)")
    parser.add_argument("--resize-masks", action="store_true",
                        help="accept rows whose declared size is not the image's size and "
                        "resize their masks (nearest) to it; such a file is not a valid "
                        "submission (validate_submission rejects it)")
    parser.add_argument("--name", default=None, help="name recorded in the JSON (default: submission stem)")
    parser.add_argument("--out-json", required=True)
    parser.add_argument("--out-csv", required=True)
    parser.add_argument("--out-pr", default=None,
                        help="optional .npz: per-class precision/recall arrays (PR curves)")
    return parser.parse_args(argv)


def class_kind(hierarchy: Hierarchy) -> dict[str, str]:
    kinds = {c: "leaf" for c in hierarchy.leaf_classes}
    kinds.update({c: "parent" for c in hierarchy.parent_classes})
    kinds.update({c: "grandparent" for c in hierarchy.grandparent_classes})
    return kinds


def _number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def summarize(result: metric.EvaluationResult, hierarchy: Hierarchy, name: str,
              submission: str) -> dict:
    kinds = class_kind(hierarchy)
    overall, n_all = result.mean_ap_over(result.classes)
    leaf, n_leaf = result.mean_ap_over(hierarchy.leaf_classes)
    parent, n_parent = result.mean_ap_over(hierarchy.expanded_parent_classes)
    per_class = [
        {"LabelName": c, "DisplayName": hierarchy.names.get(c, ""), "kind": kinds[c],
         "AP": _number(result.average_precision[i]), "num_gt": int(result.num_gt[i]),
         "num_scored": int(result.num_scored[i]), "num_tp": int(result.num_tp[i])}
        for i, c in enumerate(result.classes)
    ]
    return {
        "name": name, "submission": submission, "metric": "OID Challenge 2019 instance segmentation mAP@0.5 mask IoU",
        "mAP": _number(overall), "num_classes_scored": n_all,
        "leaf_mAP": _number(leaf), "num_leaf_classes_scored": n_leaf,
        "parent_mAP": _number(parent), "num_parent_classes_scored": n_parent,
        "num_images": result.num_images, **result.extra, "per_class": per_class,
    }


def per_class_csv(summary: dict) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["LabelName", "DisplayName", "AP", "num_gt", "kind"])
    for row in summary["per_class"]:
        ap = "" if row["AP"] is None else f"{row['AP']:.6f}"
        writer.writerow([row["LabelName"], row["DisplayName"], ap, row["num_gt"], row["kind"]])
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    log = metric.stderr_log
    hierarchy = load_hierarchy(args.hierarchy, args.classes)
    images = validity.ImageList.read(args.image_ids) if args.image_ids else None
    gt = metric.load_ground_truth(args.masks_csv, args.bbox_csv, args.labels_csv, hierarchy,
                                  args.masks, args.images, images and list(images.ids),
                                  join=args.box_join, log=log)
    gt = metric.expand_ground_truth(gt, hierarchy, log=log)
    detections = metric.read_submission(args.submission, gt, hierarchy.classes, images=images,
                                        resize=args.resize_masks, log=log)
    result = metric.evaluate(gt, detections, hierarchy.classes, log=log)
    name = args.name or Path(args.submission).stem
    summary = summarize(result, hierarchy, name, str(args.submission))
    summary["box_join"] = args.box_join  # "official" unless asked: then not the metric
    summary["resize_masks"] = bool(args.resize_masks)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    json_text = json.dumps(summary, indent=1, allow_nan=False) + "\n"
    csv_text = per_class_csv(summary)
    if args.out_pr:  # first: on any later failure it is removed again
        write_pr_curves(args.out_pr, result, hierarchy.names)
    try:
        atomic_write_text(args.out_json, json_text)
        try:
            atomic_write_text(args.out_csv, csv_text)
        except BaseException:
            Path(args.out_json).unlink(missing_ok=True)
            raise
    except BaseException:
        if args.out_pr:
            Path(args.out_pr).unlink(missing_ok=True)
        raise

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    print(f"{name}: mAP {fmt(summary['mAP'])} over {summary['num_classes_scored']} classes | "
          f"leaf mAP {fmt(summary['leaf_mAP'])} ({summary['num_leaf_classes_scored']}) | "
          f"parent mAP {fmt(summary['parent_mAP'])} ({summary['num_parent_classes_scored']}) | "
          f"{summary['num_images']} images, {summary['seconds']} s"
          + ("" if args.box_join == "official" else f" ({args.box_join} box/mask join: not the "
             "official metric)"))


if __name__ == "__main__":
    sys.exit(run_cli(main))
