"""The final predictions of ``predict`` (Kaggle CSV) -> COCO JSON.

    python scripts/predict_coco.py --predictions results/predict/predictions.csv \
        --images results/predict/images.csv \
        --classes-json results/annotations/classes.json --out results/predict/coco.json

One COCO annotation per predicted mask (compressed RLE, score, box and area
from the mask), the image list (file names relative to predict.images,
upright sizes) and every category (id, display name, MID, "leaf" or "parent")
(format: ``oidseg.predict.write_coco``). ``pycocotools.COCO`` loads the file;
``COCO.loadRes(coco["annotations"])`` takes the annotations as results.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oidseg.errors import run_cli  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", required=True, type=Path, help="Kaggle CSV of the images")
    parser.add_argument("--images", required=True, type=Path, help="images.csv of predict_collect")
    parser.add_argument("--classes-json", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)

    from oidseg.predict import write_coco

    images, annotations = write_coco(args.predictions, args.images, args.classes_json, args.out)
    print(f"predict_coco: {images} images, {annotations} masks -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(run_cli(main))
