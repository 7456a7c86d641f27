"""Throughput and peak memory of the ensemble TTA inference (SPEC section 6).

CPU: a demo-size leaf ensemble (3 models x 4 augmentations = 12 runs per
image): configs/demo/{L1,L2,L3}.py when present, else the tiny inline
ResNet-18 config of ``tests/tiny_model.py``; demo scales
256x154 and 307x184 (the full scales x 256/1333), with flip.
GPU (when one is visible): the full-size leaf ensemble configs/models/{L1,L2,L3}.py
(275 classes) at 1333x800 and 1600x960 with flip.

Weights are random (fixed seed); score threshold 0, so every image yields
max_per_img detections with masks, as the real run does.

    PYTHONPATH=. .venv/bin/python bench/bench_infer.py [--images 4] [--threads 2] [--gpu-images 3]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def synthetic_image(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 120, (height, width, 3), dtype=np.uint8)
    for _ in range(5):
        x0, y0 = rng.integers(0, width // 2), rng.integers(0, height // 2)
        w, h = rng.integers(width // 8, width // 2), rng.integers(height // 8, height // 2)
        img[y0:y0 + h, x0:x0 + w] = rng.integers(0, 255, 3)
    return img


def build_models(configs: list[Path] | None, num_classes: int, device: str) -> list[torch.nn.Module]:
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS

    from oidseg.infer import build_model_from_config

    sys.path.insert(0, str(REPO / "tests"))
    from tiny_model import tiny_cascade_config

    models = []
    for i in range(3):
        torch.manual_seed(i)
        if configs:
            models.append(build_model_from_config(configs[i], num_classes))
        else:
            init_default_scope("mmdet")
            models.append(MODELS.build(tiny_cascade_config(num_classes)["model"]).eval())
    return [m.to(device) for m in models]


def measure(ensemble, images: list[np.ndarray], device: str) -> dict:
    ensemble.predict_image(images[0])  # warm-up (allocator, kernels)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    n_det = 0
    for img in images[1:]:
        n_det += len(ensemble.predict_image(img)["scores"])
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    timed = len(images) - 1
    out = dict(images=timed, seconds=seconds, images_per_s=timed / seconds,
               detections_per_image=n_det / timed,
               peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if device == "cuda":
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def run_case(name: str, configs, num_classes, scales, image_size, n_images, device) -> None:
    from oidseg.mmdet_ext.ensemble import OIDEnsembleTTA

    models = build_models(configs, num_classes, device)
    ensemble = OIDEnsembleTTA(models, scales=scales, flips=(False, True), score_thr=0.0, nms_iou=0.5,
                              max_per_img=120, mask_thr=0.5, rpn_nms=0.7, rpn_max=1000).to(device).eval()
    images = [synthetic_image(*image_size, seed=s) for s in range(n_images + 1)]
    stats = measure(ensemble, images, device)
    source = "tiny inline config" if not configs else ", ".join(str(c.relative_to(REPO)) for c in configs)
    print(f"{name}: {len(models)} models x {len(scales) * 2} augs ({source}), {num_classes} classes, "
          f"images {image_size[0]}x{image_size[1]}, scales {scales}, device {device}")
    for key, value in stats.items():
        print(f"  {key}: {value:.3f}" if isinstance(value, float) else f"  {key}: {value}")
    sys.stdout.flush()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=4, help="timed CPU images (after 1 warm-up)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--num-classes", type=int, default=10, help="demo class count")
    p.add_argument("--gpu-images", type=int, default=3)
    p.add_argument("--skip-cpu", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import oidseg.mmdet_ext  # noqa: F401  (registers the demo backbones)

    if not args.skip_cpu:
        demo = [REPO / "configs" / "demo" / f"{m}.py" for m in ("L1", "L2", "L3")]
        configs = demo if all(c.is_file() for c in demo) else None
        run_case("cpu demo leaf ensemble", configs, args.num_classes, [(256, 154), (307, 184)], (320, 240),
                 args.images, "cpu")
    if torch.cuda.is_available():
        full = [REPO / "configs" / "models" / f"{m}.py" for m in ("L1", "L2", "L3")]
        run_case("gpu full-size leaf ensemble", full, 275, [(1333, 800), (1600, 960)], (1024, 768),
                 args.gpu_images, "cuda")
    else:
        print("gpu: no CUDA device visible, full-size case skipped")


if __name__ == "__main__":
    main()
