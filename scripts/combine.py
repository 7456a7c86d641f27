"""Leaf CSV shards + merged CSV shards -> submission (SPEC section 7, combine).

    python scripts/combine.py --image-list sample_submission.csv \
        --leaf L_00.csv ... --merged M_00.csv ... --out results/submission.csv

Every image of the image list (CSV with an ImageID column) appears once, in
the list's order; its PredictionString is the leaf triples then the merged
triples. Each listed image must be in the leaf shards and in the merged
shards exactly once; sizes come from the shards.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oidseg.errors import run_cli  # noqa: E402
from oidseg.postprocess import combine, progress  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image-list", required=True, type=Path)
    parser.add_argument("--leaf", required=True, nargs="+", type=Path, help="leaf CSV shards")
    parser.add_argument("--merged", required=True, nargs="+", type=Path, help="merged CSV shards")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    start = time.process_time()
    images = combine(args.image_list, args.leaf, args.merged, args.out)
    progress(f"combine: {images} images -> {args.out}, {time.process_time() - start:.1f} CPU s")


if __name__ == "__main__":
    sys.exit(run_cli(main))
