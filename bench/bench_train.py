"""Training cost of the four models.

CPU (always): for each demo model (configs/demo/{L1,L2,L3,P1}.py), seconds
per training iteration (2 images of synthetic coloured shapes, 160-256 px,
the config's multiscale pipeline, SGD + grad clip as in training) and the
peak resident memory of the process. With --stage-iters K it also times one
whole ``scripts/train.py`` stage of K iterations (start-up included), the
figure that sizes the demo's stage table.

GPU (when one is visible): for each full-size model (configs/models/*.py,
275 / 23 classes), images per second and peak GPU memory on synthetic
700-1024 px images through the config's multiscale pipeline (long side 1333).

Each model runs in its own child process, so the peak memory is its own.

    python bench/bench_train.py [--iters 8] [--threads 2] [--stage-iters 0] [--gpu-iters 20]
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

MODELS = ("L1", "L2", "L3", "P1")


def measure(config: str, data_dir: str, iters: int, warmup: int, device: str,
            images_per_gpu: int, full_classes: bool) -> dict:
    """Child: build the model and dataset of ``config``; time ``iters`` steps."""
    import numpy as np
    import torch
    from mmengine.dataset import pseudo_collate
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope

    import oidseg.mmdet_ext  # noqa: F401
    from mmdet.registry import DATASETS, MODELS as MODEL_REGISTRY
    from oidseg.mmdet_ext.model_cfg import set_num_classes
    from oidseg.train import build_config, build_parser

    init_default_scope("mmdet")
    args = build_parser().parse_args([
        "--config", config, "--ann", f"{data_dir}/ann.pkl", "--order", f"{data_dir}/order.npy",
        "--iters", "1000", "--work-dir", f"{data_dir}/work", "--out", f"{data_dir}/x.pth",
        "--log-jsonl", f"{data_dir}/x.jsonl", "--images-per-gpu", str(images_per_gpu)])
    cfg = build_config(args, world_size=1)
    if full_classes:  # the real head size (275 leaf / 23 parent classes)
        set_num_classes(cfg.model, int(cfg.num_classes))
    torch.manual_seed(0)
    np.random.seed(0)
    model = MODEL_REGISTRY.build(cfg.model).to(device)
    model.init_weights()
    model.train()
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    n = len(dataset)
    times, cpu_times = [], []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(warmup + iters):
        batch = pseudo_collate([dataset[(step * images_per_gpu + k) % n]
                                for k in range(images_per_gpu)])
        if device == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        model.train_step(batch, optim)
        if device == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    out = {"s_per_iter": statistics.median(times), "cpu_s_per_iter": statistics.median(cpu_times),
           "images_per_iter": images_per_gpu,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "params_m": sum(p.numel() for p in model.parameters()) / 1e6}
    if device == "cuda":
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["images_per_s"] = images_per_gpu / out["s_per_iter"]
    return out


def make_data(root: str, n_images: int, size_range: tuple[int, int]) -> None:
    import numpy as np

    from oidseg.mmdet_ext.dataset import make_synthetic_dataset

    make_synthetic_dataset(root, n_images=n_images, n_classes=10, seed=0, size_range=size_range)
    np.save(f"{root}/order.npy", np.arange(n_images, dtype=np.int64))


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    result = measure(args.child_config, args.child_data, args.iters, args.warmup,
                     args.child_device, args.images_per_gpu, args.child_device == "cuda")
    print("RESULT " + json.dumps(result))


def run_child(config: str, data: str, device: str, args: argparse.Namespace,
              iters: int, images_per_gpu: int) -> dict:
    cmd = [sys.executable, __file__, "--child-config", config, "--child-data", data,
           "--child-device", device, "--iters", str(iters), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--images-per-gpu", str(images_per_gpu)]
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{config} on {device} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def time_stage(model: str, data: str, iters: int, threads: int) -> float:
    """Wall seconds of one scripts/train.py stage (start-up included)."""
    with tempfile.TemporaryDirectory(prefix="bench_stage_") as tmp:
        cmd = [sys.executable, str(ROOT / "scripts" / "train.py"),
               "--config", str(ROOT / "configs" / "demo" / f"{model}.py"),
               "--ann", f"{data}/ann.pkl", "--order", f"{data}/order.npy",
               "--iters", str(iters), "--work-dir", f"{tmp}/work", "--out", f"{tmp}/s.pth",
               "--log-jsonl", f"{tmp}/s.jsonl", "--threads", str(threads)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        return time.perf_counter() - t0


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=8, help="timed iterations per model")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--images-per-gpu", type=int, default=2, help="CPU demo batch")
    p.add_argument("--stage-iters", type=int, default=0,
                   help="also time a whole scripts/train.py stage of this many iterations")
    p.add_argument("--gpu-iters", type=int, default=20)
    p.add_argument("--gpu-images-per-gpu", type=int, default=2)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--child-config", help=argparse.SUPPRESS)
    p.add_argument("--child-data", help=argparse.SUPPRESS)
    p.add_argument("--child-device", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_config:
        child(args)
        return

    import torch

    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        small = f"{tmp}/small"
        make_data(small, 24, (160, 256))
        print(f"CPU, {args.threads} threads, demo configs, {args.images_per_gpu} images/iter "
              "(160-256 px shapes)")
        print("s/iter = median wall seconds; CPU s/iter = process CPU seconds (all threads),"
              " which a loaded machine inflates less")
        print(f"{'model':6s} {'s/iter':>8s} {'CPU s/iter':>10s} {'peak RSS MB':>12s} {'params M':>9s}"
              + (f" {'stage of ' + str(args.stage_iters) + ' it, s':>18s}" if args.stage_iters else ""))
        for model in args.models:
            r = run_child(str(ROOT / "configs" / "demo" / f"{model}.py"), small, "cpu", args,
                          args.iters, args.images_per_gpu)
            line = (f"{model:6s} {r['s_per_iter']:8.3f} {r['cpu_s_per_iter']:10.3f} "
                    f"{r['peak_rss_mb']:12.0f} {r['params_m']:9.2f}")
            if args.stage_iters:
                line += f" {time_stage(model, small, args.stage_iters, args.threads):18.1f}"
            print(line, flush=True)
        if not torch.cuda.is_available():
            print("no GPU visible: full-size GPU figures skipped")
            return
        large = f"{tmp}/large"
        make_data(large, 16, (700, 1024))
        print(f"GPU {torch.cuda.get_device_name(0)}, full-size configs, "
              f"{args.gpu_images_per_gpu} images/iter, 275 / 23 classes")
        print(f"{'model':6s} {'images/s':>9s} {'s/iter':>8s} {'GPU peak MB':>12s}")
        for model in args.models:
            r = run_child(str(ROOT / "configs" / "models" / f"{model}.py"), large, "cuda", args,
                          args.gpu_iters, args.gpu_images_per_gpu)
            print(f"{model:6s} {r['images_per_s']:9.2f} {r['s_per_iter']:8.3f} "
                  f"{r['gpu_peak_mb']:12.0f}", flush=True)


if __name__ == "__main__":
    main()
