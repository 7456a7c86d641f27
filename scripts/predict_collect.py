"""The shard lists of ``predict`` -> the folder's image table and skip list.

    python scripts/predict_collect.py --folder DIR --expect DIGEST \
        --lists results/predict/lists/00.pkl ... \
        --out-images results/predict/images.csv --out-skipped results/predict/skipped.csv

images.csv: ImageID (the relative path, CSV-safe: ``oidseg.predict.image_id``),
File (relative path), Width, Height (upright, from the pixels), Shard; every
image predicted, in the folder's order (sorted paths). skipped.csv: File,
Reason: every file not predicted (not a JPEG/PNG name, hidden, unreadable
with predict.skip_unreadable). ``--expect``: the digest of the folder's
listing the workflow planned with (another listing now is an error). No
image to predict is an error (exit 2, no output).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oidseg.errors import run_cli  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", required=True, help="the user's image folder (predict.images)")
    parser.add_argument("--expect", required=True, help="digest of the folder's listing when planned")
    parser.add_argument("--lists", required=True, nargs="+", type=Path, help="the shards' image lists")
    parser.add_argument("--out-images", required=True, type=Path)
    parser.add_argument("--out-skipped", required=True, type=Path)
    args = parser.parse_args(argv)

    from oidseg.predict import check_listing, collect, scan_folder

    scan = scan_folder(args.folder)
    check_listing(scan.digest(), args.expect, args.folder,
                  f"{len(scan.images)} images, {len(scan.skipped)} other files")
    images, skipped = collect(args.lists, scan, args.out_images, args.out_skipped)
    print(f"predict_collect: {args.folder}: {images} images -> {args.out_images}, "
          f"{skipped} files skipped -> {args.out_skipped}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(run_cli(main))
