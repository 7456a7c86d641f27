"""Detect one image-list shard with an ensemble of Cascade Mask R-CNN models
and test-time augmentation (SPEC section 6); write the detection shard pickle
(format: docs/ARCHITECTURE.md "Inference", and :mod:`oidseg.infer`).

    scripts/infer.py --model CONFIG CHECKPOINT [--model CONFIG CHECKPOINT ...]
        --images results/annotations/test_shards/03.pkl
        --scales 1333x800 1600x960 [--flip|--no-flip]
        --score-thr 0 --nms-iou 0.5 --max-per-img 120 --mask-thr 0.5
        --rpn-nms 0.7 --rpn-max 1000
        --out results/inference/leaf/test/03.pkl [--device auto|cpu|cuda] [--threads T]

Leaf ensemble: three --model pairs, two scales, --flip (12 runs per image).
Parent: P1 alone with the same TTA. Single model: one --model, --scales
1333x800, --no-flip. A missing or unreadable image stops with an error
naming it (exit 2) and leaves no output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oidseg.errors import run_cli  # noqa: E402


def parse_scale(text: str) -> tuple[int, int]:
    """'1333x800' -> (1333, 800) (mmdet Resize keep_ratio scale: long x short)."""
    try:
        long_side, short_side = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"scale {text!r} is not WIDTHxHEIGHT, e.g. 1333x800") from None
    if long_side <= 0 or short_side <= 0:
        raise argparse.ArgumentTypeError(f"scale {text!r} must be positive")
    return long_side, short_side


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", nargs=2, action="append", required=True, metavar=("CONFIG", "CHECKPOINT"),
                   help="model config and checkpoint; repeat for an ensemble")
    p.add_argument("--images", required=True, help="image-list pickle (docs/ARCHITECTURE.md)")
    p.add_argument("--scales", nargs="+", type=parse_scale, default=[(1333, 800)], metavar="WxH")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=False,
                   help="also run horizontally flipped images")
    p.add_argument("--score-thr", type=float, default=0.0)
    p.add_argument("--nms-iou", type=float, default=0.5)
    p.add_argument("--max-per-img", type=int, default=120)
    p.add_argument("--mask-thr", type=float, default=0.5)
    p.add_argument("--rpn-nms", type=float, default=0.7, help="IoU of the NMS merging all runs' proposals")
    p.add_argument("--rpn-max", type=int, default=1000, help="merged proposals kept")
    p.add_argument("--out", required=True, help="detection shard pickle")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch, OpenCV)")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)

    import cv2
    import torch

    from oidseg.infer import (build_ensemble, check_images_exist, detect_images, load_image_list,
                              resolve_device, stderr_progress, write_detections)

    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    records = load_image_list(args.images)
    check_images_exist(records, args.images)
    device = resolve_device(args.device)
    ensemble, classes = build_ensemble(
        [tuple(m) for m in args.model], scales=args.scales, flips=(False, True) if args.flip else (False,),
        score_thr=args.score_thr, nms_iou=args.nms_iou, max_per_img=args.max_per_img, mask_thr=args.mask_thr,
        rpn_nms=args.rpn_nms, rpn_max=args.rpn_max, device=device)
    stderr_progress(f"{args.images}: {len(records)} images, {len(args.model)} model(s) x "
                    f"{len(args.scales) * (2 if args.flip else 1)} augmentation(s) on {device}")
    images = detect_images(ensemble, records, progress=stderr_progress)
    write_detections(args.out, classes, images)
    stderr_progress(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
