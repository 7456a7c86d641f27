"""Full-size models end to end: build, train, infer, and their memory (issue 11).

For each full-size model (configs/models/{L1,L2,L3,P1}.py: ResNeXt-101 64x4d /
ResNet-101 + DCNv2, FPN 256, 2000 training / 1000 test proposals, 512 RoI
samples per cascade stage, 1024-wide box heads, 275 leaf / 23 parent classes),
from randomly initialised weights (no download):

- ``train-<M>``: ``--train-iters`` training iterations (SGD + grad clip, as
  ``scripts/train.py`` builds them via :func:`oidseg.train.build_config`) on
  one real-size synthetic image (1333x800 pixels, 4 instances with mask PNGs)
  through the model's own training pipeline, the multiscale resize pinned to
  its largest size (long side 1333, short side 960) so the figure is the
  worst case; one image per iteration (images per GPU of the full run);
- ``infer-leaf``: the full 12-run leaf ensemble TTA (L1, L2, L3 x scales
  1333x800 / 1600x960 x flip; :class:`oidseg.mmdet_ext.ensemble.OIDEnsembleTTA`
  as ``oidseg/infer.py`` builds it, the run config's inference settings) on
  ``--infer-images`` 1333x800 JPEGs, through the inference job's own loop
  (``oidseg.infer.detect_images``: decoding ``--prefetch`` images ahead,
  masks encoded behind the networks), float32 or ``--amp`` (autocast:
  float16 on CUDA, bfloat16 on a CPU with bf16 instructions); the first
  image warms up, images/s is the others' throughput, and each image's
  read / model / masks / encode seconds are printed;
- ``infer-P1``: P1's 4 runs (1 model x 2 scales x flip), likewise.

Each part runs in its own child process (so a failure or an out-of-memory
kill of one part still reports the others, and each peak RSS is its own) and
prints, per step, wall seconds and the process's peak resident memory so far
(``ru_maxrss``; on a GPU also the peak GPU memory). The summary is one table;
``--json-out FILE`` also writes the rows as JSON.

CPU (this machine: 2 threads, 24 GB):

    PYTHONPATH=. python bench/bench_full_size.py --threads 2

GPU (bench/gpu_check.sh): ``--device cuda [--amp] --train-iters 12
--warmup-iters 3 --infer-images 6``; with more than ``--warmup-iters``
iterations the training throughput is the median of the timed (post-warm-up)
iterations. Inference images/s with AMP off and on:

    python bench/bench_full_size.py --device cuda --parts infer-leaf infer-P1 --infer-images 6
    python bench/bench_full_size.py --device cuda --parts infer-leaf infer-P1 --infer-images 6 --amp
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from oidseg.cli import nonnegative_int, positive_int  # noqa: E402

TRAIN_MODELS = ("L1", "L2", "L3", "P1")
PARTS = tuple(f"train-{m}" for m in TRAIN_MODELS) + ("infer-leaf", "infer-P1")
LEAF_CLASSES, PARENT_CLASSES = 275, 23
IMAGE_W, IMAGE_H = 1333, 800
TRAIN_SCALE_MAX = (1333, 960)  # the multiscale pipeline's largest size


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_synthetic(out_dir: Path, n_classes: int, seed: int = 0) -> Path:
    """One 1333x800 JPEG with 4 instances (rectangles / ellipses) and their
    full-size mask PNGs, as an annotation pickle of ``n_classes`` classes
    (docs/ARCHITECTURE.md format); returns the pickle's path."""
    import cv2
    import numpy as np

    from oidseg.errors import atomic_pickle

    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    mask_dir = out_dir / "masks"
    mask_dir.mkdir(exist_ok=True)
    img = (cv2.GaussianBlur(rng.integers(0, 256, (IMAGE_H, IMAGE_W, 3), dtype=np.uint8), (5, 5), 0)
           // 2 + 64)
    instances = []
    for k in range(4):
        w, h = int(rng.integers(120, 500)), int(rng.integers(120, 400))
        x1, y1 = int(rng.integers(0, IMAGE_W - w)), int(rng.integers(0, IMAGE_H - h))
        full = np.zeros((IMAGE_H, IMAGE_W), np.uint8)
        if k % 2:
            cv2.ellipse(full, (x1 + w // 2, y1 + h // 2), (w // 2, h // 2), 0, 0, 360, 1, -1)
        else:
            full[y1:y1 + h, x1:x1 + w] = 1
        img[full > 0] = rng.integers(0, 256, 3)
        ys, xs = np.nonzero(full)
        label = int(rng.integers(0, n_classes))
        mask_file = f"full_{k}.png"
        cv2.imwrite(str(mask_dir / mask_file), full * 255)
        instances.append({"bbox": [float(xs.min()), float(ys.min()), float(xs.max() + 1),
                                   float(ys.max() + 1)],
                          "bbox_label": label, "mask_file": mask_file, "ignore_flag": 0})
    img_path = out_dir / "image.jpg"
    cv2.imwrite(str(img_path), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    classes = [f"/m/full{c:03d}" for c in range(n_classes)]
    ann = {"metainfo": {"classes": classes, "names": classes},
           "data_list": [{"img_id": "0" * 16, "img_path": str(img_path), "width": IMAGE_W,
                          "height": IMAGE_H, "source": "train", "mask_dir": str(mask_dir),
                          "instances": instances}]}
    path = out_dir / "ann.pkl"
    atomic_pickle(path, ann)
    np.save(out_dir / "order.npy", np.zeros(1, dtype=np.int64))
    return path


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _gpu_peak_mb(device: str) -> float | None:
    if device != "cuda":
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


def train_part(model_name: str, tmp: Path, args: argparse.Namespace, emit) -> dict:
    """``--train-iters`` iterations of one full-size model on one image."""
    import numpy as np
    import torch
    from mmengine.dataset import pseudo_collate
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope

    import oidseg.mmdet_ext  # noqa: F401  (registers our components)
    from mmdet.registry import DATASETS, MODELS
    from oidseg.train import build_config, build_parser

    init_default_scope("mmdet")
    n_classes = PARENT_CLASSES if model_name == "P1" else LEAF_CLASSES
    ann = write_synthetic(tmp / "data", n_classes)
    config = ROOT / "configs" / "models" / f"{model_name}.py"
    argv = ["--config", str(config), "--ann", str(ann), "--order", str(tmp / "data" / "order.npy"),
            "--iters", "1000", "--work-dir", str(tmp / "work"), "--out", str(tmp / "x.pth"),
            "--log-jsonl", str(tmp / "x.jsonl"), "--images-per-gpu", "1",
            "--aug", "single" if model_name == "P1" else "multiscale"]
    if args.amp:
        argv.append("--amp")
    cfg = build_config(build_parser().parse_args(argv), world_size=1)
    pipeline = cfg.train_dataloader.dataset.pipeline
    for i, step in enumerate(pipeline):
        if step["type"] == "RandomResize":  # worst case of the multiscale range
            pipeline[i] = dict(type="Resize", scale=TRAIN_SCALE_MAX, keep_ratio=True)
    torch.manual_seed(0)
    np.random.seed(0)
    t0 = time.perf_counter()
    model = MODELS.build(cfg.model)
    model.init_weights()
    model = model.to(args.device).train()
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    _sync(args.device)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    emit("build", time.perf_counter() - t0, params_m=round(params_m, 1))
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, shape = [], None
    for it in range(args.train_iters):
        batch = pseudo_collate([dataset[0]])
        shape = tuple(batch["inputs"][0].shape[1:])
        _sync(args.device)
        t0 = time.perf_counter()
        losses = model.train_step(batch, optim)
        _sync(args.device)
        seconds = time.perf_counter() - t0
        loss = float(losses["loss"])
        if not np.isfinite(loss):
            raise RuntimeError(f"{model_name}: training iteration {it + 1} gave loss {loss}")
        times.append(seconds)
        emit(f"train iter {it + 1}", seconds, loss=round(loss, 3), input_hw=list(shape))
    timed = times[args.warmup_iters:] or times[-1:]
    s_iter = statistics.median(timed)
    return {"s_per_iter": s_iter, "iters_per_s": 1.0 / s_iter, "timed_iters": len(timed),
            "input_hw": list(shape), "params_m": params_m}


def write_infer_images(out_dir: Path, n: int, seed: int = 1) -> list:
    """``n`` synthetic 1333x800 JPEGs (noise and coloured rectangles) and
    their image-list records (:class:`oidseg.infer.ImageRecord`)."""
    import cv2
    import numpy as np

    from oidseg.infer import ImageRecord

    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for k in range(n):
        img = rng.integers(0, 120, (IMAGE_H, IMAGE_W, 3), dtype=np.uint8)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, IMAGE_W // 2)), int(rng.integers(0, IMAGE_H // 2))
            img[y0:y0 + int(rng.integers(100, 400)), x0:x0 + int(rng.integers(100, 600))] = \
                rng.integers(0, 255, 3)
        path = out_dir / f"infer_{k}.jpg"
        cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        records.append(ImageRecord(f"{k:016x}", str(path), IMAGE_W, IMAGE_H))
    return records


def infer_part(which: str, tmp: Path, args: argparse.Namespace, emit) -> dict:
    """The full-size TTA ensemble (leaf: 3 models x 4 augs; P1: 1 x 4) on
    ``--infer-images`` JPEGs through the inference job's loop
    (:func:`oidseg.infer.detect_images`: reading, networks, masks and
    encoding, ``--prefetch`` images ahead), ``--amp`` or float32. The first
    image warms up; images/s = the other images / their wall time."""
    import torch

    import oidseg.mmdet_ext  # noqa: F401
    from oidseg.infer import PHASES, PipelineStats, build_model_from_config, detect_images
    from oidseg.mmdet_ext.ensemble import OIDEnsembleTTA

    names, n_classes = (("L1", "L2", "L3"), LEAF_CLASSES) if which == "leaf" else (("P1",), PARENT_CLASSES)
    t0 = time.perf_counter()
    detectors = []
    for i, name in enumerate(names):
        torch.manual_seed(i)
        detectors.append(build_model_from_config(ROOT / "configs" / "models" / f"{name}.py", n_classes))
    # the run config's inference section (configs/run/openimages.yaml)
    ensemble = OIDEnsembleTTA(detectors, scales=[(1333, 800), (1600, 960)], flips=(False, True),
                              score_thr=0.0, nms_iou=0.5, max_per_img=120, mask_thr=0.5,
                              rpn_nms=0.7, rpn_max=1000, amp=args.amp).to(args.device).eval()
    precision = str(ensemble.amp_dtype or torch.float32).replace("torch.", "")
    _sync(args.device)
    runs = len(names) * 4
    emit("build", time.perf_counter() - t0, runs=runs, precision=precision)
    records = write_infer_images(tmp / "images", args.infer_images)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    per_image: list[dict] = []
    warm = PipelineStats()
    images = detect_images(ensemble, records[:1], stats=warm, per_image=per_image)
    timed = PipelineStats()
    if len(records) > 1:
        images += detect_images(ensemble, records[1:], prefetch=args.prefetch, stats=timed, per_image=per_image)
    _sync(args.device)
    for k, (timings, det) in enumerate(zip(per_image, images)):
        emit(f"TTA image {k + 1} ({runs} runs)", sum(timings.get(p, 0.0) for p in PHASES),
             detections=len(det["scores"]), **{p: round(timings.get(p, 0.0), 3) for p in PHASES})
    stats = timed if timed.images else warm
    rate = stats.images / stats.wall
    phases = per_image[1:] or per_image
    return {"s_per_image": 1.0 / rate, "images_per_s": rate, "timed_images": stats.images,
            "runs": runs, "detections": len(images[-1]["scores"]), "precision": precision,
            "prefetch": args.prefetch if timed.images else 0,
            "median_s": {p: statistics.median(t.get(p, 0.0) for t in phases) for p in PHASES}}


def child(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    part = args.child

    def emit(step: str, seconds: float, **extra) -> None:
        row = {"part": part, "step": step, "seconds": round(seconds, 3),
               "peak_rss_mb": round(peak_rss_mb())}
        gpu = _gpu_peak_mb(args.device)
        if gpu is not None:
            row["peak_gpu_mb"] = round(gpu)
        row.update(extra)
        print("STEP " + json.dumps(row), flush=True)

    with tempfile.TemporaryDirectory(prefix="bench_full_") as tmp:
        if part.startswith("train-"):
            result = train_part(part[len("train-"):], Path(tmp), args, emit)
        else:
            result = infer_part(part[len("infer-"):], Path(tmp), args, emit)
    result["peak_rss_mb"] = peak_rss_mb()
    gpu = _gpu_peak_mb(args.device)
    if gpu is not None:
        result["peak_gpu_mb"] = gpu
    print("RESULT " + json.dumps(result), flush=True)


def run_part(part: str, args: argparse.Namespace) -> dict:
    """Run one part in a child; never raises (a failure becomes the row's error)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", part, "--device", args.device,
           "--train-iters", str(args.train_iters), "--warmup-iters", str(args.warmup_iters),
           "--infer-images", str(args.infer_images), "--threads", str(args.threads),
           "--prefetch", str(args.prefetch)]
    if args.amp:
        cmd.append("--amp")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    t0 = time.perf_counter()
    result: dict = {}
    tail: list[str] = []
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        assert proc.stdout is not None
        deadline = time.monotonic() + args.part_timeout
        for line in proc.stdout:
            if line.startswith("STEP "):
                row = json.loads(line[5:])
                extra = {k: v for k, v in row.items()
                         if k not in ("part", "step", "seconds", "peak_rss_mb")}
                print(f"  {part:11s} {row['step']:26s} {row['seconds']:9.2f} s  "
                      f"peak RSS {row['peak_rss_mb'] / 1024:6.2f} GB  {json.dumps(extra)}", flush=True)
            elif line.startswith("RESULT "):
                result = json.loads(line[7:])
            else:
                tail = (tail + [line.rstrip()])[-25:]
            if time.monotonic() > deadline:
                proc.kill()
                break
        rc = proc.wait()
    except OSError as exc:
        rc, tail = -1, [str(exc)]
    result["wall_s"] = time.perf_counter() - t0
    if rc or "peak_rss_mb" not in result:
        reason = "killed (out of memory?)" if rc in (-9, 137) else f"exit code {rc}"
        if time.perf_counter() - t0 > args.part_timeout:
            reason = f"timed out after {args.part_timeout} s"
        result["error"] = reason
        print(f"  {part}: FAILED ({reason}); last output:\n    " + "\n    ".join(tail[-12:]),
              file=sys.stderr, flush=True)
    return result


def table(rows: dict[str, dict], args: argparse.Namespace) -> str:
    gpu = args.device == "cuda"
    head = (f"{'part':11s} {'s/iter or s/image':>18s} {'it/s or img/s':>14s} {'peak RSS GB':>12s}"
            + (f" {'peak GPU GB':>12s}" if gpu else "") + f" {'wall s':>8s}  note")
    lines = [head]
    for part, r in rows.items():
        if "error" in r:
            lines.append(f"{part:11s} {'-':>18s} {'-':>14s} {'-':>12s}" + (f" {'-':>12s}" if gpu else "")
                         + f" {r['wall_s']:8.1f}  FAILED: {r['error']}")
            continue
        per = r.get("s_per_iter", r.get("s_per_image"))
        rate = r.get("iters_per_s", r.get("images_per_s"))
        note = (f"{r['params_m']:.1f} M params, input {r['input_hw'][0]}x{r['input_hw'][1]}"
                if "params_m" in r else
                f"{r['runs']} runs, {r['detections']} detections, {r['precision']}, prefetch {r['prefetch']}, "
                "median s " + " / ".join(f"{p} {v:.3f}" for p, v in r["median_s"].items()))
        lines.append(f"{part:11s} {per:18.3f} {rate:14.4f} {r['peak_rss_mb'] / 1024:12.2f}"
                     + (f" {r['peak_gpu_mb'] / 1024:12.2f}" if gpu else "")
                     + f" {r['wall_s']:8.1f}  {note}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--amp", action="store_true",
                   help="training with AmpOptimWrapper (CUDA only); inference under autocast "
                        "(float16 on CUDA, bfloat16 on a CPU with bf16 instructions)")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--train-iters", type=int, default=2)
    p.add_argument("--warmup-iters", type=int, default=1,
                   help="training iterations left out of the s/iter median")
    p.add_argument("--infer-images", type=positive_int, default=1,
                   help="TTA images (with more than 1, the first warms up and is left out of images/s)")
    p.add_argument("--prefetch", type=nonnegative_int, default=2,
                   help="inference: images decoded ahead / encoded behind the networks (0: serial)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads per part (0: torch default)")
    p.add_argument("--part-timeout", type=int, default=3600, help="seconds per part")
    p.add_argument("--json-out", default=None, help="also write the rows as JSON here")
    p.add_argument("--child", choices=PARTS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    parts = [args.child] if args.child else args.parts
    if args.amp and args.device != "cuda" and any(part.startswith("train-") for part in parts):
        p.error("--amp with training parts needs --device cuda (the inference parts alone run "
                "bfloat16 autocast on a CPU)")
    if args.child:
        child(args)
        return 0
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_full_size: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    where = (torch.cuda.get_device_name(0) if args.device == "cuda"
             else f"CPU, {args.threads or torch.get_num_threads()} threads")
    print(f"full-size models, random init, {where}{', AMP' if args.amp else ''}; "
          f"train: {args.train_iters} iterations x 1 image {IMAGE_W}x{IMAGE_H} "
          f"(resized to at most {TRAIN_SCALE_MAX[0]}x{TRAIN_SCALE_MAX[1]}); "
          f"TTA: {args.infer_images} image(s) {IMAGE_W}x{IMAGE_H}", flush=True)
    rows = {part: run_part(part, args) for part in args.parts}
    text = table(rows, args)
    print(text, flush=True)
    for part, r in rows.items():
        if "images_per_s" in r:
            print(f"{part}: {r['images_per_s']:.4f} images/s ({r['precision']}, prefetch {r['prefetch']}, "
                  f"{r['timed_images']} timed images)", flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            {"device": where, "amp": args.amp, "rows": rows}, indent=1))
    return 1 if any("error" in r for r in rows.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
