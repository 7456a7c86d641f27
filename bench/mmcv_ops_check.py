"""mmcv's ops that oidseg uses, checked on the CPU against references that do
not use mmcv (run by bench/cuda_build_check.sh in the environment it builds;
also runs in the project's venv):

- nms: against a greedy NMS written here (random boxes, several thresholds);
- RoIAlign (aligned, mmdet's setting): on an image that is linear in x and y,
  bilinear sampling is exact, so each bin equals the plane at its centre;
- DeformConv2d / ModulatedDeformConv2d with zero offsets (and a mask of 1):
  the same as torch's conv2d with the same weights;
- with a GPU visible, nms and RoIAlign on CUDA equal the CPU results.

It also prints what the _ext library was compiled with. Exit 1 on a mismatch.

    python bench/mmcv_ops_check.py
"""

from __future__ import annotations

import sys

import numpy as np
import torch


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float) -> list[int]:
    order = list(np.argsort(-scores, kind="stable"))
    keep = []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order:
        i = order.pop(0)
        keep.append(i)
        rest = []
        for j in order:
            w = max(0.0, min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]))
            h = max(0.0, min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]))
            inter = w * h
            if inter / (area[i] + area[j] - inter) <= iou_thr:
                rest.append(j)
        order = rest
    return keep


def check_nms(device: str) -> str:
    from mmcv.ops import nms

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 80, (200, 2))
    wh = rng.uniform(5, 40, (200, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.permutation(200).astype(np.float32) / 200  # distinct scores
    for thr in (0.3, 0.5, 0.7):
        _, keep = nms(torch.from_numpy(boxes).to(device), torch.from_numpy(scores).to(device), thr)
        ref = greedy_nms(boxes, scores, thr)
        assert keep.cpu().tolist() == ref, f"nms at IoU {thr} on {device}: {len(keep)} kept, reference {len(ref)}"
    return "nms: 3 thresholds x 200 boxes equal a greedy reference"


def check_roi_align(device: str) -> str:
    from mmcv.ops import RoIAlign

    h = w = 32
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    plane = (2.0 * xs + 3.0 * ys + 1.0)[None, None]  # value at pixel centre (x + 0.5, y + 0.5) in aligned coords
    rois = torch.tensor([[0, 4.0, 6.0, 20.0, 14.0], [0, 1.5, 2.25, 29.0, 30.5]])
    out = RoIAlign((7, 7), spatial_scale=1.0, sampling_ratio=2, aligned=True)(plane.to(device), rois.to(device)).cpu()
    for k, (_, x1, y1, x2, y2) in enumerate(rois.tolist()):
        cx = x1 + (torch.arange(7) + 0.5) * (x2 - x1) / 7 - 0.5
        cy = y1 + (torch.arange(7) + 0.5) * (y2 - y1) / 7 - 0.5
        ref = 2.0 * cx[None, :] + 3.0 * cy[:, None] + 1.0
        err = (out[k, 0] - ref).abs().max().item()
        assert err < 1e-3, f"RoIAlign on {device}: max error {err}"
    return "RoIAlign: 2 RoIs x 7x7 bins equal the exact plane values"


def check_deform_conv() -> list[str]:
    from mmcv.ops import DeformConv2d, ModulatedDeformConv2d

    torch.manual_seed(0)
    x = torch.randn(2, 8, 17, 19)
    lines = []
    for cls in (DeformConv2d, ModulatedDeformConv2d):
        conv = cls(8, 16, 3, stride=1, padding=1, bias=cls is ModulatedDeformConv2d)
        offset = torch.zeros(2, 18, 17, 19)
        with torch.no_grad():
            if cls is DeformConv2d:
                out = conv(x, offset)
                ref = torch.nn.functional.conv2d(x, conv.weight, None, 1, 1)
            else:
                out = conv(x, offset, torch.ones(2, 9, 17, 19))
                ref = torch.nn.functional.conv2d(x, conv.weight, conv.bias, 1, 1)
        err = (out - ref).abs().max().item()
        assert err < 1e-4, f"{cls.__name__}: max error {err} against conv2d"
        lines.append(f"{cls.__name__}: zero offsets equal conv2d (max error {err:.1e})")
    return lines


def main() -> int:
    import mmcv
    from mmcv.ops import get_compiler_version, get_compiling_cuda_version

    print(f"mmcv {mmcv.__version__}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
          f"ops compiled with {get_compiler_version()}, CUDA {get_compiling_cuda_version()}, "
          f"GPU visible: {torch.cuda.is_available()}")
    lines = [check_nms("cpu"), check_roi_align("cpu"), *check_deform_conv()]
    if torch.cuda.is_available():
        lines += [check_nms("cuda") + " (CUDA)", check_roi_align("cuda") + " (CUDA)"]
    for line in lines:
        print("ok  " + line)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AssertionError as exc:
        print(f"FAIL {exc}", file=sys.stderr)
        sys.exit(1)
