"""Detect one image-list shard with an ensemble of Cascade Mask R-CNN models
and test-time augmentation (SPEC section 6); write the detection shard pickle
(format: docs/ARCHITECTURE.md "Inference", and :mod:`oidseg.infer`).

    scripts/infer.py --model CONFIG CHECKPOINT [--model CONFIG CHECKPOINT ...]
        --images results/annotations/test_shards/03.pkl
        --scales 1333x800 1600x960 [--flip|--no-flip]
        --score-thr 0 --nms-iou 0.5 --max-per-img 120 --mask-thr 0.5
        --rpn-nms 0.7 --rpn-max 1000
        --out results/inference/leaf/test/03.pkl [--device auto|cpu|cuda] [--threads T]
        [--amp] [--prefetch N]

Leaf ensemble: three --model pairs, two scales, --flip (12 runs per image).
Parent: P1 alone with the same TTA. Single model: one --model, --scales
1333x800, --no-flip. A missing or unreadable image stops with an error
naming it (exit 2) and leaves no output.

--amp runs the networks under autocast (float16 on CUDA, bfloat16 on a CPU
with bf16 instructions; elsewhere float32, said in the log): faster on a GPU,
results within the tolerance of docs/ARCHITECTURE.md "Inference". --prefetch
N (default 2) decodes N images ahead and encodes masks behind the networks
in two threads; 0 is the plain serial loop (same output, byte for byte).
Each image's log line gives its read / model / masks / encode seconds; the
last line the images per second.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oidseg.cli import fraction, nonnegative_int, open_fraction, positive_int  # noqa: E402
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
    p.add_argument("--score-thr", type=fraction, default=0.0)
    p.add_argument("--nms-iou", type=fraction, default=0.5)
    p.add_argument("--max-per-img", type=positive_int, default=120)
    p.add_argument("--mask-thr", type=fraction, default=0.5)
    p.add_argument("--rpn-nms", type=open_fraction, default=0.7, help="IoU of the NMS merging all runs' proposals")
    p.add_argument("--rpn-max", type=positive_int, default=1000, help="merged proposals kept")
    p.add_argument("--out", required=True, help="detection shard pickle")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (torch, OpenCV)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                   help="networks under autocast: float16 on CUDA, bfloat16 on a CPU with bf16 instructions")
    p.add_argument("--prefetch", type=nonnegative_int, default=2,
                   help="images decoded ahead and masks encoded behind the networks, in two threads "
                        "(0: one image after another in one thread)")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)

    import cv2
    import torch

    from oidseg.infer import (PipelineStats, build_ensemble, check_images_exist, detect_images,
                              load_image_list, resolve_device, stderr_progress, write_detections)

    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    records = load_image_list(args.images)
    check_images_exist(records, args.images)
    device = resolve_device(args.device)
    ensemble, classes = build_ensemble(
        [tuple(m) for m in args.model], scales=args.scales, flips=(False, True) if args.flip else (False,),
        score_thr=args.score_thr, nms_iou=args.nms_iou, max_per_img=args.max_per_img, mask_thr=args.mask_thr,
        rpn_nms=args.rpn_nms, rpn_max=args.rpn_max, device=device, amp=args.amp)
    precision = "float32"
    if args.amp:
        dtype = ensemble.amp_dtype
        precision = (f"autocast {str(dtype).replace('torch.', '')}" if dtype is not None
                     else f"float32 (--amp: {device} has no fast half-precision type)")
    pipeline = f"prefetch {args.prefetch}" if args.prefetch else "serial (prefetch 0)"
    stderr_progress(f"{args.images}: {len(records)} images, {len(args.model)} model(s) x "
                    f"{len(args.scales) * (2 if args.flip else 1)} augmentation(s) on {device}, "
                    f"{precision}, {pipeline}")
    stats = PipelineStats()
    images = detect_images(ensemble, records, progress=stderr_progress, prefetch=args.prefetch, stats=stats)
    write_detections(args.out, classes, images)
    stderr_progress(stats.summary())
    stderr_progress(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
