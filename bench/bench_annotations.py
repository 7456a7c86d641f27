"""Benchmark: leaf and parent annotation pickles from a full-size masks CSV.

    python bench/bench_annotations.py [--rows 2100000] [--images 850000] [--seed 0] [--keep DIR]

Generates, in a temporary folder, a synthetic hierarchy with the real shape
(300 classes: 275 leaves, 23 parents, 2 grandparents; leaves under two
parents; leaves at depth 2) and a masks CSV with the real column layout and
a long-tailed class distribution. Then, in a fresh child process (so its peak
RSS is the build's own), it does what `build_annotations.py train` does for
one source: read and validate the CSV, build the leaf set and write its
pickle, then build the parent set and write its pickle. Image sizes come from
a synthetic size table (no JPEG is read); the mask-file check is left out
(filesystem-bound, see the report). Prints wall and CPU seconds per phase
and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HEX = np.array(list("0123456789abcdef"))


def mids(n: int, rng: np.random.Generator) -> list[str]:
    alphabet = np.array(list("0123456789abcdefghijklmnopqrstuvwxyz_"))
    out: set[str] = set()
    while len(out) < n:
        out.add("/m/0" + "".join(rng.choice(alphabet, size=int(rng.integers(3, 6)))))
    return sorted(out)


def synthetic_hierarchy(rng: np.random.Generator) -> tuple[dict, list[tuple[str, str]]]:
    all_mids = list(rng.permutation(mids(300, rng)))
    grand, parents, leaves = all_mids[:2], all_mids[2:25], all_mids[25:]
    node_children: dict[str, list[str]] = {m: [] for m in grand + parents}
    node_children[grand[0]] += parents[:2]
    node_children[grand[1]] += parents[2:3]
    cursor = 0
    for p in parents:  # 6 leaves per parent -> 138 leaves at depth 1 or 2
        node_children[p] += leaves[cursor:cursor + 6]
        cursor += 6
    node_children[grand[0]] += leaves[cursor:cursor + 5]
    node_children[grand[1]] += leaves[cursor + 5:cursor + 9]
    cursor += 9
    for k in range(5):  # leaves under a second parent (like Teddy bear)
        node_children[parents[10 + k]].append(leaves[k * 6])

    def node(m: str) -> dict:
        kids = node_children.get(m)
        return {"LabelName": m, "Subcategory": [node(k) for k in kids]} if kids else {"LabelName": m}

    top = grand + parents[3:] + leaves[cursor:]
    tree = {"LabelName": "/m/0bl9f", "Subcategory": [node(m) for m in top]}
    return tree, [(m, f"Class {i}") for i, m in enumerate(sorted(all_mids))]


def write_masks_csv(path: Path, rows: int, images: int, leaves: list[str], parents: list[str],
                    rng: np.random.Generator) -> None:
    ids = np.unique(np.array(["".join(r) for r in HEX[rng.integers(0, 16, size=(images, 16))]]))
    image = ids[rng.integers(0, len(ids), size=rows)]
    zipf = 1.0 / np.arange(1, len(leaves) + 1) ** 1.1
    labels = np.array(leaves)[rng.choice(len(leaves), size=rows, p=zipf / zipf.sum())]
    some = rng.random(rows) < 0.03  # a few rows labelled with a parent class directly
    labels[some] = np.array(parents)[rng.integers(0, len(parents), size=int(some.sum()))]
    box_ids = np.array(["".join(r) for r in HEX[rng.integers(0, 16, size=(rows, 8))]])
    x = np.sort(rng.random((rows, 2)), axis=1).round(6)
    y = np.sort(rng.random((rows, 2)), axis=1).round(6)
    frame = pd.DataFrame({"ImageID": image, "LabelName": labels, "BoxID": box_ids})
    frame.insert(0, "MaskPath", frame["ImageID"] + "_" + frame["LabelName"].str.replace("/", "")
                 + "_" + frame["BoxID"] + ".png")
    frame = frame.drop_duplicates("MaskPath")
    n = len(frame)
    frame["BoxXMin"], frame["BoxXMax"] = x[:n, 0], x[:n, 1]
    frame["BoxYMin"], frame["BoxYMax"] = y[:n, 0], y[:n, 1]
    frame["PredictedIoU"] = rng.uniform(0.5, 0.95, size=n).round(5)
    clicks = [";".join(f"{a:.5f} {b:.5f} 1" for a, b in rng.random((8, 2))) for _ in range(64)]
    frame["Clicks"] = np.array(clicks)[rng.integers(0, 64, size=n)]
    frame.sort_values("ImageID", kind="stable").to_csv(path, index=False)


def rss_mb() -> float:
    """Peak resident memory of this process (VmHWM: reset by exec, unlike
    ru_maxrss, which a child inherits from the process that forked it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(workdir: Path) -> dict:
    """Child process: the timed build."""
    from oidseg.annotations import Source, leaf_annotations, parent_annotations
    from oidseg.errors import atomic_pickle
    from oidseg.hierarchy import load_hierarchy
    from oidseg.raw import SizeTable, read_masks_csv

    phases = {}

    def phase(name, fn):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        phases[name] = {"wall_s": round(time.perf_counter() - w0, 2),
                        "cpu_s": round(time.process_time() - c0, 2),
                        "peak_rss_mb_so_far": round(rss_mb())}
        print(f"  {name:<22} {phases[name]}", file=sys.stderr)
        return out

    hierarchy = load_hierarchy(workdir / "hierarchy.json", workdir / "classes.csv")
    start_rss = rss_mb()
    masks = phase("read+validate CSV", lambda: read_masks_csv(workdir / "masks.csv",
                                                               hierarchy.classes))
    ids = masks["ImageID"].unique()
    rng = np.random.default_rng(1)
    sizes = SizeTable(ids, rng.integers(300, 1025, len(ids)), rng.integers(300, 1025, len(ids)))
    source = Source("train", "images/train", "results/annotations/masks/train", sizes)
    leaf = phase("leaf records", lambda: leaf_annotations(hierarchy, [(source, masks)]))
    phase("leaf pickle write", lambda: atomic_pickle(workdir / "leaf_train.pkl", leaf))
    n_leaf = sum(len(r["instances"]) for r in leaf["data_list"]), len(leaf["data_list"])
    del leaf
    parent = phase("parent records", lambda: parent_annotations(hierarchy, [(source, masks)]))
    phase("parent pickle write", lambda: atomic_pickle(workdir / "parent_train.pkl", parent))
    n_parent = sum(len(r["instances"]) for r in parent["data_list"]), len(parent["data_list"])
    return {
        "rows": len(masks), "images": len(ids),
        "leaf": {"instances": n_leaf[0], "images": n_leaf[1],
                 "pickle_mb": round((workdir / "leaf_train.pkl").stat().st_size / 2**20)},
        "parent": {"instances": n_parent[0], "images": n_parent[1],
                   "pickle_mb": round((workdir / "parent_train.pkl").stat().st_size / 2**20)},
        "phases": phases,
        "total_wall_s": round(sum(p["wall_s"] for p in phases.values()), 2),
        "total_cpu_s": round(sum(p["cpu_s"] for p in phases.values()), 2),
        "rss_before_mb": round(start_rss),
        "peak_rss_mb": round(rss_mb()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_100_000)
    parser.add_argument("--images", type=int, default=850_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0

    tmp = None
    if args.keep:
        workdir = args.keep
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench_annotations_")
        workdir = Path(tmp.name)
    rng = np.random.default_rng(args.seed)
    tree, classes = synthetic_hierarchy(rng)
    (workdir / "hierarchy.json").write_text(json.dumps(tree))
    (workdir / "classes.csv").write_text("".join(f"{m},{n}\n" for m, n in classes))
    from oidseg.hierarchy import load_hierarchy

    h = load_hierarchy(workdir / "hierarchy.json", workdir / "classes.csv")
    shape = (len(h.leaf_classes), len(h.parent_classes), len(h.grandparent_classes))
    assert shape == (275, 23, 2), shape
    t0 = time.perf_counter()
    if not (workdir / "masks.csv").exists():
        write_masks_csv(workdir / "masks.csv", args.rows, args.images, h.leaf_classes,
                        h.parent_classes, rng)
    print(f"synthetic masks CSV: {(workdir / 'masks.csv').stat().st_size / 2**20:.0f} MB "
          f"in {time.perf_counter() - t0:.1f} s; hierarchy {shape} (leaf, parent, grandparent)",
          file=sys.stderr)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, __file__, "--measure", str(workdir)],
                          capture_output=True, text=True, env=env)
    sys.stderr.write(proc.stderr)
    if proc.returncode:
        return proc.returncode
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=1))
    print(f"\nleaf+parent pickles from {result['rows']:,} mask rows: "
          f"{result['total_wall_s']} s wall, {result['total_cpu_s']} s CPU, "
          f"peak RSS {result['peak_rss_mb']} MB")
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
