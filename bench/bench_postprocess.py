"""Benchmark of the post-processing chain on one full-size synthetic shard.

    PYTHONPATH=. .venv/bin/python bench/bench_postprocess.py [--images 4000] [--dets 120]
        [--malloc-trim BYTES] [--workdir DIR [--reuse]]

Generates a synthetic 300-class hierarchy shaped like the real one (275
leaves, 23 parents, 2 grandparents; some leaves under two parents, some
leaves at depth 2), then one leaf and one parent detection shard of
``--images`` images (500..1024 px a side) with ``--dets`` detections each:
elliptic masks covering 0.1 to 30 % of the image, half of them a shifted
copy (same class, mask IoU about 0.2..0.9) of another one. Runs the real
CLIs (convert leaf, convert parent, expand x2, merge, combine, validate) as
child processes and prints each one's CPU seconds and peak memory, and the
extrapolation to the 25 test shards (99,999 images).

Merge computes mask IoUs with pycocotools' public ``mask.iou`` (one call
per image and class over the candidate pairs' masks). ``--malloc-trim BYTES`` sets glibc's ``MALLOC_TRIM_THRESHOLD_`` in the
convert steps' environment (default: unset, no tuning, as the workflow
runs; 268435456 is what the removed ``mallopt`` call set: no measurable
gain, the same page faults).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from oidseg.hierarchy import load_hierarchy  # noqa: E402

TEST_IMAGES = 99_999
SHARDS = 25

def synthetic_hierarchy(folder: Path, seed: int = 0) -> Path:
    """300 classes: 275 leaves, 23 parents, 2 grandparents -> classes.json."""
    rng = np.random.default_rng(seed)
    leaves = [f"/m/leaf{i:03d}" for i in range(275)]
    parents = [f"/m/parent{i:02d}" for i in range(23)]
    grands = ["/m/grand0", "/m/grand1"]
    # 4 parents under each grandparent; every parent gets 4-7 leaf children,
    # the grandparents 3 direct leaves each; 8 leaves have a second parent.
    pool = list(rng.permutation(leaves))
    children: dict[str, list[str]] = {
        p: [pool.pop() for _ in range(rng.integers(4, 8))] for p in parents
    }
    direct = {g: [pool.pop() for _ in range(3)] for g in grands}
    placed = [c for p in parents for c in children[p]]
    for leaf in rng.choice(placed, size=8, replace=False):
        other = [p for p in parents if leaf not in children[p]]
        children[str(rng.choice(other))].append(str(leaf))

    def node(mid: str) -> dict:
        kids = children.get(mid, [])
        return {"LabelName": mid, **({"Subcategory": [node(k) for k in kids]} if kids else {})}

    top = []
    for gi, g in enumerate(grands):
        sub = [node(p) for p in parents[4 * gi : 4 * gi + 4]] + [node(k) for k in direct[g]]
        top.append({"LabelName": g, "Subcategory": sub})
    top += [node(p) for p in parents[8:]]
    top += [node(leaf) for leaf in pool]  # leaves without a parent
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hierarchy.json").write_text(json.dumps({"LabelName": "/m/root", "Subcategory": top}))
    (folder / "classes.csv").write_text(
        "".join(f"{m},{m[3:]}\n" for m in leaves + parents + grands)
    )
    h = load_hierarchy(folder / "hierarchy.json", folder / "classes.csv")
    assert (len(h.leaf_classes), len(h.parent_classes), len(h.grandparent_classes)) == (275, 23, 2)
    out = folder / "classes.json"
    out.write_text(json.dumps(h.to_json()))
    return out


def ellipse_counts(h: int, w: int, cx: float, cy: float, a: float, b: float) -> list[int]:
    """Uncompressed column-major RLE counts of an axis-aligned ellipse."""
    x = np.arange(max(int(np.ceil(cx - a)), 0), min(int(np.floor(cx + a)), w - 1) + 1)
    if x.size == 0:
        x = np.array([min(max(int(cx), 0), w - 1)])
    half = b * np.sqrt(np.clip(1.0 - ((x - cx) / a) ** 2, 0.0, 1.0))
    y0 = np.clip(np.round(cy - half), 0, h - 1).astype(np.int64)
    y1 = np.clip(np.round(cy + half), 1, h).astype(np.int64)
    y1 = np.maximum(y1, y0 + 1)
    edges = np.empty(2 * x.size, dtype=np.int64)
    edges[0::2] = x * h + y0
    edges[1::2] = x * h + y1
    bounds = np.concatenate([[0], edges, [h * w]])
    counts = np.diff(bounds)
    # merge touching runs (a zero-length gap between two columns)
    if (counts[1:-1] == 0).any():
        m = np.zeros((h, w), dtype=np.uint8, order="F")
        for xi, a0, a1 in zip(x, y0, y1):
            m[a0:a1, xi] = 1
        return mask_utils.encode(m)["counts"]  # type: ignore[return-value]
    return counts.tolist()


def image_detections(rng: np.random.Generator, h: int, w: int, n_dets: int, n_classes: int) -> dict:
    """One image's detections: half the masks are shifted same-class copies."""
    n_seed = n_dets - n_dets // 2
    frac = np.exp(rng.uniform(np.log(0.001), np.log(0.3), size=n_seed))
    aspect = np.exp(rng.uniform(-0.7, 0.7, size=n_seed))
    area = frac * h * w
    a = np.minimum(np.sqrt(area * aspect / np.pi), w / 2 - 1)
    b = np.minimum(area / (np.pi * a), h / 2 - 1)
    cx = rng.uniform(a, w - a)
    cy = rng.uniform(b, h - b)
    labels = rng.integers(0, n_classes, size=n_seed)
    copy_of = rng.integers(0, n_seed, size=n_dets // 2)
    shift = rng.uniform(0.05, 0.6, size=n_dets // 2)  # of the semi-axis: IoU ~0.2..0.9
    shapes = [(cx[i], cy[i], a[i], b[i]) for i in range(n_seed)]
    shapes += [(min(cx[i] + s * a[i], w - 1.0), cy[i], a[i], b[i]) for s, i in zip(shift, copy_of)]
    all_labels = np.concatenate([labels, labels[copy_of]]).astype(np.int64)
    counts = [ellipse_counts(h, w, *shape) for shape in shapes]
    plain = [{"size": [h, w], "counts": c} for c in counts if isinstance(c, list)]
    encoded = iter(mask_utils.frPyObjects(plain, h, w)) if plain else iter(())
    masks = [next(encoded)["counts"] if isinstance(c, list) else c for c in counts]
    scores = rng.uniform(0, 1, size=n_dets).astype(np.float32)
    scores[rng.random(n_dets) < 0.01] = 3e-7  # would print as 0.000000
    order = rng.permutation(n_dets)
    return {
        "labels": all_labels[order],
        "scores": scores,
        "bboxes": np.zeros((n_dets, 4), np.float32),
        "masks": [masks[i] for i in order],
    }


def detection_shard(
    path: Path, ids: list[str], sizes: np.ndarray, classes: list[str], n_dets: int, seed: int
) -> None:
    """Write a detection shard; every 50th image has no detections."""
    rng = np.random.default_rng(seed)
    images = []
    for k, (image_id, (w, h)) in enumerate(zip(ids, sizes.tolist())):
        det = image_detections(rng, h, w, n_dets if k % 50 else 0, len(classes))
        images.append({"img_id": image_id, "width": w, "height": h, **det})
    with open(path, "wb") as fh:
        pickle.dump(
            {"format": "oidseg-detections/1", "classes": classes, "images": images},
            fh,
            protocol=pickle.HIGHEST_PROTOCOL,
        )


def run_step(
    name: str, argv: list[str], *, malloc_trim: int | None = None
) -> tuple[float, float, float]:
    """Run one CLI; return (CPU s, wall s, peak RSS MB) of that child alone."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    if malloc_trim is not None and name.startswith("convert"):
        env["MALLOC_TRIM_THRESHOLD_"] = str(malloc_trim)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *argv], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{err}")
    print(f"  {err.strip()}", file=sys.stderr)
    return usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss / 1024


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--dets", type=int, default=120, help="detections per image and ensemble")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep files here (default: temp)"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="reuse the shards already generated in --workdir"
    )
    parser.add_argument(
        "--malloc-trim",
        type=int,
        default=None,
        metavar="BYTES",
        help="MALLOC_TRIM_THRESHOLD_ for the convert steps (default: unset, as the workflow)",
    )
    parser.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.generate_only and args.workdir is None:
        parser.error("--generate-only needs --workdir")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_post_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        classes_json = synthetic_hierarchy(work / "hierarchy")
        meta = json.loads(classes_json.read_text())
        ids = [f"{i:016x}" for i in np.random.default_rng(7).integers(0, 2**62, size=args.images)]
        image_list = work / "image_list.csv"
        with open(image_list, "w", newline="") as fh:
            csv.writer(fh).writerows([["ImageID"], *[[i] for i in ids]])
        if args.generate_only:
            sizes = np.random.default_rng(8).integers(500, 1025, size=(args.images, 2))
            detection_shard(work / "leaf.pkl", ids, sizes, meta["leaf_classes"], args.dets, 1)
            detection_shard(work / "parent.pkl", ids, sizes, meta["parent_classes"], args.dets, 2)
            return
        if not (args.reuse and (work / "leaf.pkl").exists() and (work / "parent.pkl").exists()):
            # in a child process, so that this one stays small: a child
            # started by fork counts the parent's resident pages in its peak
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--generate-only",
                    "--workdir",
                    str(work),
                    "--images",
                    str(args.images),
                    "--dets",
                    str(args.dets),
                ],
                check=True,
            )
            print(
                f"generated {args.images} images x {args.dets} detections x 2 ensembles "
                f"in {time.perf_counter() - t0:.0f} s",
                file=sys.stderr,
            )

        s = lambda n: str(ROOT / "scripts" / n)  # noqa: E731
        w = lambda n: str(work / n)  # noqa: E731
        steps = [
            (
                "convert leaf",
                [s("convert.py"), "--detections", w("leaf.pkl"), "--out", w("leaf.csv")],
            ),
            (
                "convert parent",
                [s("convert.py"), "--detections", w("parent.pkl"), "--out", w("parent.csv")],
            ),
            (
                "expand leaf (--parents-only)",
                [
                    s("expand.py"),
                    "--input",
                    w("leaf.csv"),
                    "--classes-json",
                    str(classes_json),
                    "--parents-only",
                    "--out",
                    w("leaf_exp.csv"),
                ],
            ),
            (
                "expand parent",
                [
                    s("expand.py"),
                    "--input",
                    w("parent.csv"),
                    "--classes-json",
                    str(classes_json),
                    "--out",
                    w("parent_exp.csv"),
                ],
            ),
            (
                "merge",
                [
                    s("merge.py"),
                    "--inputs",
                    w("leaf_exp.csv"),
                    w("parent_exp.csv"),
                    "--out",
                    w("merged.csv"),
                ],
            ),
            (
                "combine",
                [
                    s("combine.py"),
                    "--image-list",
                    str(image_list),
                    "--leaf",
                    w("leaf.csv"),
                    "--merged",
                    w("merged.csv"),
                    "--out",
                    w("submission.csv"),
                ],
            ),
            (
                "validate",
                [
                    s("validate_submission.py"),
                    "--submission",
                    w("submission.csv"),
                    "--image-list",
                    str(image_list),
                    "--classes-json",
                    str(classes_json),
                    "--out",
                    w("submission.ok"),
                ],
            ),
        ]
        rows = []
        for name, cmd in steps:
            cpu, wall, peak = run_step(name, cmd, malloc_trim=args.malloc_trim)
            rows.append((name, cpu, wall, peak))
        scale = TEST_IMAGES / args.images
        trim = "unset" if args.malloc_trim is None else args.malloc_trim
        print(
            f"\nPost-processing, one shard of {args.images} images x {args.dets} detections "
            f"per ensemble (extrapolated x{scale:.2f} to {TEST_IMAGES} images), "
            f"MALLOC_TRIM_THRESHOLD_ {trim}:"
        )
        print(f"{'step':32s} {'CPU s':>8s} {'wall s':>8s} {'peak MB':>8s} {'CPU s, test set':>16s}")
        for name, cpu, wall, peak in rows:
            print(f"{name:32s} {cpu:8.1f} {wall:8.1f} {peak:8.0f} {cpu * scale:16.0f}")
        total = sum(r[1] for r in rows)
        print(
            f"{'total':32s} {total:8.1f} {sum(r[2] for r in rows):8.1f} "
            f"{max(r[3] for r in rows):8.0f} {total * scale:16.0f}"
        )
        print(
            f"test set: {total * scale / 60:.1f} CPU minutes; peak memory of one job "
            f"{max(r[3] for r in rows) / 1024:.2f} GB (goal: <= 30 CPU minutes, <= 4 GB)"
        )
        for name in (
            "leaf.pkl",
            "leaf.csv",
            "parent.csv",
            "leaf_exp.csv",
            "parent_exp.csv",
            "merged.csv",
            "submission.csv",
        ):
            print(f"  {name}: {(work / name).stat().st_size / 2**20:.0f} MB")
    finally:
        if args.workdir is None and not args.generate_only:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
