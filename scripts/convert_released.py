"""Convert one of the original's released checkpoints (mmdetection 0.6.0,
2019) into our checkpoint format for the model config (issue 10; the
conversion rules are :mod:`oidseg.released`).

    scripts/convert_released.py --released aug_large_ms_lr_test_epoch_1_iter_76000.pth
        --config configs/released/L1.py --classes-json results/annotations/classes.json
        --kind leaf --out results/models/L1/released.pth
        [--original-classes configs/released/original_classes.json]

A file that is not a 2019 Cascade R-CNN checkpoint, is truncated, holds
another architecture or another class set stops with an error naming it
(exit 2) and leaves no output.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oidseg.errors import run_cli  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--released", required=True, type=Path, help="the released 2019 checkpoint")
    p.add_argument("--config", required=True, type=Path, help="our model config (configs/released/<M>.py)")
    p.add_argument("--classes-json", required=True, type=Path, help="results/annotations/classes.json (our order)")
    p.add_argument("--kind", required=True, choices=["leaf", "parent"], help="the model's class set")
    p.add_argument("--out", required=True, type=Path, help="the converted checkpoint")
    p.add_argument("--original-classes", type=Path, default=None,
                   help="the original's class order, used when the file has no meta.CLASSES "
                        "(default: configs/released/original_classes.json)")
    return p


def main(argv=None) -> None:
    from oidseg.released import ORIGINAL_CLASSES_JSON, convert_released, our_classes

    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    classes = our_classes(args.classes_json, args.kind)
    summary = convert_released(args.released, args.out, args.config, classes, args.kind,
                               args.original_classes or ORIGINAL_CLASSES_JSON)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    print(f"{args.out}: " + json.dumps(summary), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(run_cli(main))
