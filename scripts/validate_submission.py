"""Check a submission CSV; write the --out flag file only if it is valid.

    python scripts/validate_submission.py --submission results/submission.csv \
        --image-list sample_submission.csv \
        --classes-json results/annotations/classes.json \
        [--image-sizes results/annotations/test_shards/*.pkl] --out results/submission.ok

Checks the header, every listed image exactly once, labels among the classes
of classes.json, confidences in [0, 1], and that every mask decodes (base64,
zlib, COCO RLE without negative runs) to exactly ImageHeight x ImageWidth;
with --image-sizes (the test shard pickles, val_images.pkl, or CSV tables
ImageID,ImageWidth,ImageHeight) every row must declare its image's true
size. The rules are those of oidseg.validity, which the scorer uses too. The
first bad row is named (row number, header = row 1, and ImageID).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oidseg.errors import atomic_write_text, run_cli  # noqa: E402
from oidseg.postprocess import load_classes_json, progress  # noqa: E402
from oidseg.submission import read_image_sizes, validate_submission  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--submission", required=True, type=Path)
    parser.add_argument("--image-list", required=True, type=Path)
    parser.add_argument("--classes-json", required=True, type=Path)
    parser.add_argument(
        "--image-sizes",
        nargs="*",
        default=None,
        type=Path,
        help="true image sizes: annotation pickles of the image list (test shards, "
        "val_images.pkl) or CSV ImageID,ImageWidth,ImageHeight; without it the "
        "declared sizes are not compared with the images",
    )
    parser.add_argument("--out", required=True, type=Path, help="flag file written on success")
    args = parser.parse_args(argv)
    start = time.process_time()
    classes = set(load_classes_json(args.classes_json).classes)
    sizes = read_image_sizes(args.image_sizes) if args.image_sizes else None
    summary = validate_submission(args.submission, args.image_list, classes, sizes)
    atomic_write_text(args.out, summary.text(args.submission))
    progress(
        f"validate_submission: {args.submission} is valid: {summary.images} images, "
        f"{summary.predictions} predictions, {time.process_time() - start:.1f} CPU s"
    )


if __name__ == "__main__":
    sys.exit(run_cli(main))
