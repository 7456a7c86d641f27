"""Peak memory of the submission validator and the scorer on adversarial rows.

Issue 18 item 2: a mask's cost must be bounded by that mask, not by the
whole row nor by the declared image size. Each case is one submission row
(one image), checked by ``scripts/validate_submission.py`` and scored by
``scripts/evaluate.py`` in a fresh process; the peak RSS of that process
(``os.wait4`` -> ``ru_maxrss``) is printed with its wall time. The
processes run under ``RLIMIT_AS`` (``--limit-gb``) so that a tool that would
need more fails with a MemoryError instead of swapping.

Cases (the "all runs 1" mask alternates every pixel in column-major order:
an RLE string of H x W characters, "111" then "0"s, about 1/1000 of that
after zlib):

- ``normal``: 1024 x 768, 120 ordinary masks (polygons);
- ``8192x8192 x0``: no mask: what the scorer's ground truth alone costs at
  that image size (its one mask PNG resized to 8192 x 8192 and encoded);
- ``8192x8192 x1`` / ``x10``: one / ten all-runs-1 masks at 8192 x 8192
  (87 KB / 870 KB of CSV);
- ``1024x768 x40``: forty all-runs-1 masks at 1024 x 768.

For the scorer, the image is in the ground truth with a label and a mask of
the class, so every detection is measured and matched. ``--repo`` runs
another checkout's scripts (e.g. the code before the fix, for comparison).

    PYTHONPATH=. .venv/bin/python bench/bench_metric_memory.py [--repo .] [--limit-gb 8]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "0123456789abcdef"
LABEL = "/m/a"
HEADER = "ImageID,ImageWidth,ImageHeight,PredictionString"


def all_runs_one(height: int, width: int) -> str:
    """EncodedMask of the H x W mask whose runs are all 1 (streamed: the
    H x W-character RLE string is never held here)."""
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(b"111")]
    left = height * width - 3
    block = b"0" * (1 << 20)
    while left > 0:
        piece = block[: min(left, len(block))]
        parts.append(compressor.compress(piece))
        left -= len(piece)
    parts.append(compressor.flush())
    return base64.b64encode(b"".join(parts)).decode("ascii")


def normal_masks(n: int, height: int, width: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
        rx, ry = rng.uniform(0.03, 0.2) * width, rng.uniform(0.03, 0.2) * height
        angles = np.sort(rng.uniform(0, 2 * np.pi, 16))
        radius = rng.uniform(0.8, 1.0, 16)
        poly = np.stack([cx + rx * radius * np.cos(angles), cy + ry * radius * np.sin(angles)], 1)
        rle = mask_utils.frPyObjects([poly.ravel().tolist()], height, width)[0]
        out.append(base64.b64encode(zlib.compress(rle["counts"], 9)).decode("ascii"))
    return out


def write_case(folder: Path, width: int, height: int, masks: list[str]) -> dict:
    """Submission, image list, classes.json and ground-truth files of one image."""
    folder.mkdir(parents=True)
    row = " ".join(f"{LABEL} {0.9 - 0.001 * k:.6f} {m}" for k, m in enumerate(masks))
    (folder / "sub.csv").write_text(f"{HEADER}\n{IMAGE},{width},{height},{row}\n")
    (folder / "list.csv").write_text(f"ImageID\n{IMAGE}\n")
    (folder / "classes.json").write_text(json.dumps({"classes": [LABEL], "ancestors": {}}))
    (folder / "hierarchy.json").write_text(json.dumps(
        {"LabelName": "/m/root", "Subcategory": [{"LabelName": LABEL}]}))
    (folder / "classes.csv").write_text(f"{LABEL},A\n")
    images = folder / "images"
    images.mkdir()
    # a JPEG header of the declared size (uniform grey: a few KB)
    from PIL import Image

    Image.new("L", (width, height), 128).save(images / f"{IMAGE}.jpg", quality=50)
    pngs = folder / "pngs"
    pngs.mkdir()
    small = np.zeros((64, 64), np.uint8)
    small[16:48, 16:48] = 255  # resized to the image size by the scorer
    name = f"{IMAGE}_ma_b1.png"
    cv2.imwrite(str(pngs / name), small)
    (folder / "masks.csv").write_text(
        "MaskPath,ImageID,LabelName,BoxID,BoxXMin,BoxXMax,BoxYMin,BoxYMax,PredictedIoU,Clicks\n"
        f"{name},{IMAGE},{LABEL},b1,0.25,0.75,0.25,0.75,0.9,\n")
    (folder / "bbox.csv").write_text(
        f"ImageID,LabelName,XMin,XMax,YMin,YMax,IsGroupOf\n{IMAGE},{LABEL},0.25,0.75,0.25,0.75,0\n")
    (folder / "labels.csv").write_text(f"ImageID,LabelName,Confidence\n{IMAGE},{LABEL},1\n")
    return {"folder": folder, "csv_bytes": (folder / "sub.csv").stat().st_size}


def commands(repo: Path, folder: Path) -> dict[str, list[str]]:
    py = sys.executable
    return {
        "validator": [py, str(repo / "scripts" / "validate_submission.py"),
                      "--submission", str(folder / "sub.csv"), "--image-list", str(folder / "list.csv"),
                      "--classes-json", str(folder / "classes.json"), "--out", str(folder / "sub.ok")],
        "scorer": [py, str(repo / "scripts" / "evaluate.py"), "--submission", str(folder / "sub.csv"),
                   "--hierarchy", str(folder / "hierarchy.json"), "--classes", str(folder / "classes.csv"),
                   "--masks-csv", str(folder / "masks.csv"), "--bbox-csv", str(folder / "bbox.csv"),
                   "--labels-csv", str(folder / "labels.csv"), "--masks", str(folder / "pngs"),
                   "--images", str(folder / "images"), "--image-ids", str(folder / "list.csv"),
                   "--out-json", str(folder / "x.json"), "--out-csv", str(folder / "x.csv")],
    }


def run_peak(cmd: list[str], limit: int) -> tuple[int, float, float, str]:
    """(exit status, peak RSS in MB, wall seconds, last stderr line) of a
    fresh process under RLIMIT_AS = ``limit`` bytes."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=cap, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        lines = err.read().decode("utf-8", "replace").strip().splitlines()
    return proc.returncode, usage.ru_maxrss / 1024, seconds, lines[-1] if lines else ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=ROOT, help="checkout whose scripts run")
    parser.add_argument("--limit-gb", type=float, default=8.0, help="RLIMIT_AS of each tool")
    parser.add_argument("--cases", nargs="*", default=None, help="subset of the case names")
    args = parser.parse_args(argv)
    limit = int(args.limit_gb * (1 << 30))
    big = all_runs_one(8192, 8192)
    small = all_runs_one(768, 1024)
    cases = {
        "normal 1024x768 x120": (1024, 768, normal_masks(120, 768, 1024)),
        "8192x8192 x0": (8192, 8192, []),  # the ground truth's own cost at that size
        "8192x8192 x1": (8192, 8192, [big]),
        "8192x8192 x10": (8192, 8192, [big] * 10),
        "1024x768 x40": (1024, 768, [small] * 40),
    }
    if args.cases:
        cases = {k: v for k, v in cases.items() if any(c in k for c in args.cases)}
    print(f"repo {args.repo.resolve()}, RLIMIT_AS {args.limit_gb:g} GB per tool; "
          "peak RSS of the whole process (Python, numpy, pandas, cv2 included)")
    print(f"{'case':24s} {'CSV':>9s} {'RLE chars':>12s} | {'validator':>22s} | {'scorer':>22s}")
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, (width, height, masks)) in enumerate(cases.items()):
            info = write_case(Path(tmp) / f"case{k}", width, height, masks)
            lengths = {m: len(zlib.decompress(base64.b64decode(m))) for m in set(masks)}
            chars = sum(lengths[m] for m in masks)
            cells = []
            for tool, cmd in commands(args.repo, info["folder"]).items():
                rc, peak, seconds, last = run_peak(cmd, limit)
                verdict = "ok" if rc == 0 else ("MemoryError" if "MemoryError" in last
                                                else f"exit {rc}")
                cells.append(f"{peak:7.0f} MB {seconds:5.1f} s {verdict:>4s}")
                if rc != 0 and verdict != "MemoryError":
                    print(f"  {tool}: {last}")
            print(f"{name:24s} {info['csv_bytes'] / 1e3:7.0f}KB {chars:12,d} | "
                  f"{cells[0]:>22s} | {cells[1]:>22s}", flush=True)


if __name__ == "__main__":
    main()
