"""Mask-NMS merge of 25-class CSV shards (SPEC section 7, merge).

    python scripts/merge.py --inputs A.csv B.csv [--iou 0.5] [--score-thr 0] --out M.csv

The inputs must list the same images in the same order (the expanded leaf
and parent shards of one test shard). Per image the triples are
concatenated (first input first); triples with score > --score-thr and a
non-empty mask are kept; per class, walking by descending score (ties: input
order), every detection whose mask IoU with a kept one is >= --iou is
dropped. Kept triples are written unchanged, in input order.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oidseg.cli import fraction, open_fraction  # noqa: E402
from oidseg.errors import run_cli  # noqa: E402
from oidseg.postprocess import merge, progress  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--inputs", required=True, nargs="+", type=Path, help="CSV shards")
    parser.add_argument("--iou", type=open_fraction, default=0.5, help="suppress at mask IoU >= this")
    parser.add_argument(
        "--score-thr", type=fraction, default=0.0, help="keep triples with score > this (default 0)"
    )
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    start = time.process_time()
    triples = merge(args.inputs, args.out, iou_thr=args.iou, score_thr=args.score_thr)
    progress(
        f"merge: {' + '.join(map(str, args.inputs))} -> {args.out}: {triples} triples, "
        f"{time.process_time() - start:.1f} CPU s"
    )


if __name__ == "__main__":
    sys.exit(run_cli(main))
