"""Draw the submitted masks on images (``oidseg.visualize``).

Held-out validation: K images, each drawn twice side by side, the ground
truth (masks; group-of and box-only rows as dashed boxes) and the final
submission's masks scoring at least ``--score-thr``. Test: the first
``--n-test-images`` rows of the test submission with such a mask,
predictions only. Both PNGs are written atomically (both or neither).

    python scripts/visualize.py --hierarchy H.json --classes C.csv \
        --masks-csv M.csv --bbox-csv B.csv --labels-csv L.csv \
        --masks results/annotations/masks/validation --val-images IMG/validation \
        --image-ids results/annotations/heldout_val.csv \
        --val-submission results/val_submission.csv \
        --test-submission results/submission.csv --test-images IMG/test \
        --n-images 12 --n-test-images 8 --score-thr 0.3 \
        --out-val results/figures/predictions_val.png \
        --out-test results/figures/predictions_test.png
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oidseg import metric, raw  # noqa: E402
from oidseg import visualize as vis  # noqa: E402
from oidseg.errors import InputError, run_cli  # noqa: E402
from oidseg.hierarchy import load_hierarchy  # noqa: E402

#: ground truth | submission pairs per row, test panels per row
PAIRS_PER_ROW = 3
TEST_PER_ROW = 4


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    metric.add_ground_truth_arguments(parser)
    parser.add_argument("--val-images", required=True, help="folder of validation {ImageID}.jpg")
    parser.add_argument("--image-ids", required=True, help="held-out CSV with an ImageID column")
    parser.add_argument("--val-submission", required=True, help="Kaggle CSV of the held-out split")
    parser.add_argument("--test-submission", required=True, help="Kaggle CSV of the test split")
    parser.add_argument("--test-images", required=True, help="folder of test {ImageID}.jpg")
    parser.add_argument("--n-images", type=int, default=12, help="held-out images drawn")
    parser.add_argument("--n-test-images", type=int, default=8, help="test images drawn")
    parser.add_argument("--score-thr", type=float, default=0.3, help="lowest score drawn")
    parser.add_argument("--out-val", required=True, help="PNG: ground truth | submission")
    parser.add_argument("--out-test", required=True, help="PNG: test predictions")
    args = parser.parse_args(argv)
    if args.n_images < 1 or args.n_test_images < 1:
        parser.error("--n-images and --n-test-images must be at least 1")
    return args


def masks(n: int) -> str:
    return f"{n} mask" if n == 1 else f"{n} masks"


def validation_panels(args: argparse.Namespace, hierarchy, log) -> list[vis.Panel]:
    known = hierarchy.classes
    heldout = raw.read_image_list(args.image_ids)["ImageID"].tolist()
    with_mask = set(raw.read_masks_csv(args.masks_csv, known)["ImageID"])
    chosen = vis.choose_images(heldout, with_mask.__contains__, args.n_images)
    gt = metric.load_ground_truth(args.masks_csv, args.bbox_csv, args.labels_csv, hierarchy,
                                  args.masks, args.val_images, chosen, log=log)
    rows = vis.read_submission_rows(args.val_submission, chosen, known)
    panels = []
    for image_id in chosen:
        image = vis.read_image(Path(args.val_images) / f"{image_id}.jpg", image_id)
        height, width = image.shape[:2]
        truth = vis.ground_truth_instances(gt, int(gt.image_index([image_id])[0]))
        item = rows.get(image_id)
        predicted = [] if item is None else vis.decode_predictions(
            item, height, width, args.score_thr,
            where=f"{args.val_submission}: row {item.row} / {image_id}")
        panels.append(vis.Panel(image, truth, f"{image_id}: ground truth ({len(truth)})"))
        panels.append(vis.Panel(image, predicted,
                                f"submission: {masks(len(predicted))} >= {args.score_thr:g}"))
    return panels


def predicted_test_panels(args: argparse.Namespace, hierarchy) -> list[vis.Panel]:
    items = vis.first_rows_with_predictions(args.test_submission, args.n_test_images,
                                            hierarchy.classes, args.score_thr)
    panels = []
    for item in items:
        image = vis.read_image(Path(args.test_images) / f"{item.image_id}.jpg", item.image_id)
        height, width = image.shape[:2]
        predicted = vis.decode_predictions(
            item, height, width, args.score_thr,
            where=f"{args.test_submission}: row {item.row} / {item.image_id}")
        panels.append(vis.Panel(image, predicted,
                                f"{item.image_id}: {masks(len(predicted))} >= {args.score_thr:g}"))
    return panels


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    log = metric.stderr_log
    hierarchy = load_hierarchy(args.hierarchy, args.classes)
    colours = vis.class_colours(hierarchy.classes)
    val = validation_panels(args, hierarchy, log)
    test = predicted_test_panels(args, hierarchy)
    if not test:
        raise InputError(f"{args.test_submission}: no image rows")
    pairs = min(PAIRS_PER_ROW, len(val) // 2)
    size_val = vis.plot_grid(val, 2 * pairs, args.out_val, colours=colours, names=hierarchy.names,
                             title="held-out validation: ground truth (left) | submitted masks (right)")
    try:
        size_test = vis.plot_grid(test, TEST_PER_ROW, args.out_test, colours=colours,
                                  names=hierarchy.names, title="test: submitted masks")
    except BaseException:
        Path(args.out_val).unlink(missing_ok=True)
        raise
    drawn = sum(len(p.instances) for p in val[1::2])
    log(f"visualize: {len(val) // 2} held-out images ({drawn} submitted masks drawn) -> "
        f"{args.out_val} {size_val[0]}x{size_val[1]}; {len(test)} test images -> "
        f"{args.out_test} {size_test[0]}x{size_test[1]}; "
        f"{time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    sys.exit(run_cli(main))
