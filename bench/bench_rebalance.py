"""Benchmark: the three re-balanced lists on a synthetic full-size leaf set.

    PYTHONPATH=. .venv/bin/python bench/bench_rebalance.py [--images 1000000]
        [--instances 2100000] [--v5test 50000] [--no-data-list]

Synthetic data: ``--images`` images (the last ``--v5test`` of them V5-test),
``--instances`` instances over 275 leaf classes with a long tail (class probabilities
log-linear between anchor ranks: 150k, 15k, 3k, 160 and 30 images at ranks 0,
23, 63, 240 and 274), every image at least one instance. The
parent set maps each leaf class to one of 23 parents (or none) and keeps the
images' unique parent labels; its most frequent parent is named Person
(``/m/01g317``) so the default ``stop_at_class`` is exercised.

Timed: building the mmdet-style ``data_list`` (Python dicts, the pickle's
shape) and converting it to CSR arrays (``image_labels_from_dataset``), then
``leaf`` (7 rounds), ``leaf_oversampled`` (7) and ``parent`` (10) with the
original's parameters. Prints seconds per step, entries per list and the
process's peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np

from oidseg.rebalance import (
    ImageLabels,
    LeafListParams,
    OversampledListParams,
    ParentListParams,
    build_list,
    image_labels_from_dataset,
    image_labels_from_pairs,
)

N_LEAF = 275
N_PARENT = 23


def synthetic_pairs(n_images: int, n_instances: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    extra = rng.multinomial(n_instances - n_images, np.full(n_images, 1.0 / n_images))
    per_image = 1 + extra
    image_index = np.repeat(np.arange(n_images, dtype=np.int64), per_image)
    # images per class, log-linear between anchor ranks (rank: count), roughly
    # the real leaf set's long tail
    anchors = {0: 150_000, 23: 15_000, 63: 3_000, 240: 160, 274: 30}
    log_n = np.interp(np.arange(N_LEAF), list(anchors), np.log(list(anchors.values())))
    p = np.exp(log_n)
    p /= p.sum()
    labels = rng.choice(N_LEAF, size=image_index.size, p=p).astype(np.int64)
    # shuffle class ids so frequency is not the class index order
    labels = rng.permutation(N_LEAF)[labels]
    return image_index, labels


def parent_set(leaf: ImageLabels, seed: int = 1) -> ImageLabels:
    rng = np.random.default_rng(seed)
    # about 60% of leaves have a parent, parent 0 the most of them; each parent
    # also gets one of the 23 most frequent leaves, as real parents have
    # thousands of images
    parent_of = np.where(rng.random(N_LEAF) < 0.6,
                         np.minimum(rng.geometric(0.15, N_LEAF) - 1, N_PARENT - 1), -1)
    by_frequency = np.argsort(-np.bincount(leaf.labels, minlength=N_LEAF), kind="stable")
    parent_of[by_frequency[:N_PARENT]] = np.arange(N_PARENT)
    pair_images = np.repeat(np.arange(leaf.n_images), np.diff(leaf.indptr))
    parents = parent_of[leaf.labels]
    keep = parents >= 0
    mids = [f"/m/p{k}" for k in range(N_PARENT)]
    counts = np.bincount(parents[keep], minlength=N_PARENT)
    mids[int(np.argmax(counts))] = "/m/01g317"
    return image_labels_from_pairs(pair_images[keep], parents[keep], leaf.is_test, mids)


def data_list_from_pairs(image_index: np.ndarray, labels: np.ndarray, is_test: np.ndarray,
                         classes: list[str]) -> dict:
    """The annotation pickle's shape (docs/ARCHITECTURE.md), built in Python."""
    bounds = np.searchsorted(image_index, np.arange(is_test.size + 1))
    labels_list = labels.tolist()
    names = [c.replace("/", "") for c in classes]
    data_list = []
    for i in range(is_test.size):
        img_id = f"{i:016x}"
        insts = [
            {"bbox": [1.0, 2.0, 30.0, 40.0], "bbox_label": lab,
             "mask_file": f"{img_id}_{names[lab]}_{j}.png", "ignore_flag": 0}
            for j, lab in enumerate(labels_list[bounds[i]:bounds[i + 1]])
        ]
        data_list.append({
            "img_id": img_id, "img_path": f"images/{img_id}.jpg", "width": 1024, "height": 768,
            "source": "v5test" if is_test[i] else "train", "mask_dir": "masks/train",
            "instances": insts,
        })
    return {"metainfo": {"classes": classes, "names": classes}, "data_list": data_list}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--instances", type=int, default=2_100_000)
    parser.add_argument("--v5test", type=int, default=50_000)
    parser.add_argument("--no-data-list", action="store_true",
                        help="skip the Python data_list and its conversion")
    args = parser.parse_args(argv)

    total = time.perf_counter()
    t = time.perf_counter()
    image_index, labels = synthetic_pairs(args.images, args.instances)
    is_test = np.zeros(args.images, dtype=bool)
    is_test[args.images - args.v5test:] = True
    classes = [f"/m/l{k}" for k in range(N_LEAF)]
    print(f"synthetic pairs: {time.perf_counter() - t:.1f} s", flush=True)

    if args.no_data_list:
        t = time.perf_counter()
        leaf = image_labels_from_pairs(image_index, labels, is_test, classes)
        print(f"CSR from pairs: {time.perf_counter() - t:.1f} s", flush=True)
    else:
        t = time.perf_counter()
        ann = data_list_from_pairs(image_index, labels, is_test, classes)
        print(f"data_list (pickle shape) built: {time.perf_counter() - t:.1f} s, "
              f"peak RSS {peak_rss_mb():.0f} MB", flush=True)
        t = time.perf_counter()
        leaf = image_labels_from_dataset(ann, "<synthetic>")
        print(f"data_list -> CSR: {time.perf_counter() - t:.1f} s", flush=True)
        del ann
    del image_index, labels
    n_pairs = leaf.labels.size
    class_images = np.bincount(leaf.labels[np.repeat(~leaf.is_test, np.diff(leaf.indptr))],
                               minlength=N_LEAF)
    ranked = np.sort(class_images)[::-1]
    print(f"leaf set: {leaf.n_images} images, {n_pairs} image-class pairs; images per class at "
          f"rank 0/23/63/240/274: {ranked[[0, 23, 63, 240, 274]].tolist()}", flush=True)

    t = time.perf_counter()
    parent = parent_set(leaf)
    print(f"parent set: {parent.labels.size} image-class pairs, "
          f"{time.perf_counter() - t:.1f} s", flush=True)

    for name, data, params in (
        ("leaf", leaf, LeafListParams()),
        ("leaf_oversampled", leaf, OversampledListParams()),
        ("parent", parent, ParentListParams()),
    ):
        t = time.perf_counter()
        result = build_list(data, params)
        secs = time.perf_counter() - t
        stops = [s for s in result.cap_stops if s is not None]
        print(f"{name}: {secs:.1f} s, {len(result.rounds)} rounds, {result.order.size} entries "
              f"({result.round_lengths.min()}..{result.round_lengths.max()} per round)"
              + (f", cap stopped the middle group at rank {stops}" if stops else ""),
              flush=True)
    print(f"total {time.perf_counter() - total:.1f} s, peak RSS {peak_rss_mb():.0f} MB",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
