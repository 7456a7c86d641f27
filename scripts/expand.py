"""Expand a Kaggle CSV shard to the ancestor classes (SPEC section 7, expand).

    python scripts/expand.py --input A.csv --classes-json results/annotations/classes.json \
        [--parents-only] [--score-thr 0] --out B.csv

Every triple with score >= --score-thr (the original drops only score < thres)
gets one copy per ancestor class (same score text, same mask). Without --parents-only the original triples are kept
too (parent model: 23 classes + grandparent copies); with it they are dropped
(leaf ensemble -> the 25 parent/grandparent classes). Output per image: the
kept originals in input order, then the copies in input order.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oidseg.cli import fraction  # noqa: E402
from oidseg.errors import run_cli  # noqa: E402
from oidseg.postprocess import expand, load_classes_json, progress  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", required=True, type=Path, help="Kaggle CSV shard")
    parser.add_argument(
        "--classes-json", required=True, type=Path, help="results/annotations/classes.json"
    )
    parser.add_argument("--parents-only", action="store_true", help="drop the original triples")
    parser.add_argument(
        "--score-thr", type=fraction, default=0.0, help="keep triples with score >= this (default 0)"
    )
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    start = time.process_time()
    classes = load_classes_json(args.classes_json)
    triples = expand(
        args.input, classes, args.out, parents_only=args.parents_only, score_thr=args.score_thr
    )
    progress(
        f"expand: {args.input} -> {args.out}: {triples} triples, "
        f"{time.process_time() - start:.1f} CPU s"
    )


if __name__ == "__main__":
    sys.exit(run_cli(main))
