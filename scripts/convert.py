"""Detection shard pickle -> Kaggle CSV shard (SPEC section 7, convert).

    python scripts/convert.py --detections results/inference/leaf/test/03.pkl \
        --out results/post/test/leaf/03.csv

Per detection one ``LabelName Confidence EncodedMask`` triple (Confidence
``%.6f``; EncodedMask = base64(zlib.compress(RLE counts, 9)), the RLE taken
as it is from the shard). Every image of the shard gets a line, also without
detections; ImageWidth/ImageHeight are the shard's original sizes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oidseg.errors import run_cli  # noqa: E402
from oidseg.postprocess import convert, progress  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--detections", required=True, type=Path, help="detection shard pickle")
    parser.add_argument("--out", required=True, type=Path, help="Kaggle CSV shard to write")
    args = parser.parse_args(argv)
    start = time.process_time()
    images = convert(args.detections, args.out)
    progress(
        f"convert: {args.detections} -> {args.out}: {images} images, "
        f"{time.process_time() - start:.1f} CPU s"
    )


if __name__ == "__main__":
    sys.exit(run_cli(main))
