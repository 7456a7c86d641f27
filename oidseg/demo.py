"""Embedded demo dataset: the official raw inputs (SPEC section 2) in miniature.

A seeded generator writes, with the official file names and formats:

- a 15-class hierarchy JSON under the real root ``/m/0bl9f``: 10 leaves,
  3 parents and exactly 2 grandparents; one leaf (Diamond) under two parents
  (like Teddy bear), leaves at depth 2, a leaf directly under a grandparent,
  and 2 top-level leaves;
- the header-less class-description CSV;
- train / validation / V5-test masks CSVs (leaf labels only, as in the real
  data), train / validation box CSVs (with IsGroupOf=1 rows and box-only
  rows that have no mask) and image-label CSVs (positive 1 and negative 0);
- binary 0/255 mask PNGs at a size different from their image, inside zips
  named and sharded like the real ones (``challenge-2019-train-masks-{0-f}.zip``,
  ``challenge-2019-validation-masks-{0-f}.zip``, ``test-masks-{0-f}.zip``;
  shard = first hex digit of the ImageID; all 16 shards are written);
- JPEG images in ``images/{train,validation,v5test,test}/`` and a Kaggle-like
  ``sample_submission.csv`` test list.

Every leaf class is a distinct shape AND colour on a lightly noisy plain
background, 2 to 5 objects per image, later objects occluding earlier ones
(the mask is the visible part, the box its tight box). Class frequencies are
long-tailed. Same seed and sizes -> identical bytes.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from oidseg.errors import InputError

ROOT_MID = "/m/0bl9f"
MANIFEST = "demo_manifest.json"
HEX = "0123456789abcdef"

FILES = {
    "hierarchy": "challenge-2019-label300-segmentable-hierarchy.json",
    "classes": "challenge-2019-classes-description-segmentable.csv",
    "train_masks": "challenge-2019-train-segmentation-masks.csv",
    "val_masks": "challenge-2019-validation-segmentation-masks.csv",
    "train_bbox": "challenge-2019-train-segmentation-bbox.csv",
    "val_bbox": "challenge-2019-validation-segmentation-bbox.csv",
    "train_labels": "challenge-2019-train-segmentation-labels.csv",
    "val_labels": "challenge-2019-validation-segmentation-labels.csv",
    "v5test_masks": "test-annotations-object-segmentation.csv",
    "test_list": "sample_submission.csv",
}
ZIP_PREFIX = {
    "train": "challenge-2019-train-masks-",
    "validation": "challenge-2019-validation-masks-",
    "v5test": "test-masks-",
}
SPLITS = ("train", "validation", "v5test", "test")

MASK_HEADER = ["MaskPath", "ImageID", "LabelName", "BoxID", "BoxXMin", "BoxXMax",
               "BoxYMin", "BoxYMax", "PredictedIoU", "Clicks"]
BBOX_HEADER = ["ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax", "IsGroupOf"]
LABEL_HEADER = ["ImageID", "LabelName", "Confidence"]
TEST_HEADER = ["ImageID", "ImageWidth", "ImageHeight", "PredictionString"]


@dataclass(frozen=True)
class LeafClass:
    mid: str
    name: str
    shape: str
    rgb: tuple[int, int, int]
    weight: float  # relative frequency (long tail)


# Leaves, most frequent first. Shapes and colours are all distinct.
LEAVES = (
    LeafClass("/m/0c7rjy", "Red rectangle", "rectangle", (220, 40, 40), 0.24),
    LeafClass("/m/0bt7nd", "Green ellipse", "ellipse", (40, 200, 60), 0.18),
    LeafClass("/m/04m1pz", "Blue triangle", "triangle", (50, 80, 235), 0.14),
    LeafClass("/m/02j8vc", "Magenta ring", "ring", (220, 50, 210), 0.10),
    LeafClass("/m/0gk5xm", "Orange hexagon", "hexagon", (245, 150, 30), 0.09),
    LeafClass("/m/03ytpc", "Brown cross", "cross", (150, 95, 40), 0.08),
    LeafClass("/m/01v2tq", "Cyan diamond", "diamond", (40, 215, 225), 0.06),
    LeafClass("/m/0k2hsf", "White star", "star", (245, 245, 245), 0.05),
    LeafClass("/m/06zr4q", "Yellow half-disc", "halfdisc", (235, 225, 40), 0.035),
    LeafClass("/m/05nb8w", "Pink L-shape", "lshape", (250, 160, 190), 0.025),
)
PARENTS = {  # non-leaf classes: MID -> display name
    "/m/0dq7kz": "Polygon",        # grandparent
    "/m/07q4vm": "Curved shape",   # grandparent
    "/m/0fz9xh": "Quadrilateral",  # parent under Polygon
    "/m/09k3rw": "Round shape",    # parent under Curved shape
    "/m/0h8kn2": "Symbol",         # top-level parent
}


def _leaf(shape: str) -> dict:
    return {"LabelName": next(c.mid for c in LEAVES if c.shape == shape)}


def hierarchy_json() -> dict:
    """The demo hierarchy in the official nested format."""
    return {"LabelName": ROOT_MID, "Subcategory": [
        {"LabelName": "/m/0dq7kz", "Subcategory": [
            {"LabelName": "/m/0fz9xh", "Subcategory": [_leaf("rectangle"), _leaf("diamond")]},
            _leaf("triangle"),
            _leaf("hexagon"),
        ]},
        {"LabelName": "/m/07q4vm", "Subcategory": [
            {"LabelName": "/m/09k3rw", "Subcategory": [_leaf("ellipse"), _leaf("ring")]},
            _leaf("halfdisc"),
        ]},
        {"LabelName": "/m/0h8kn2", "Subcategory": [_leaf("diamond"), _leaf("star")]},
        _leaf("cross"),
        _leaf("lshape"),
    ]}


def class_descriptions() -> list[tuple[str, str]]:
    """(MID, display name), sorted by MID like the real file."""
    rows = [(c.mid, c.name) for c in LEAVES] + list(PARENTS.items())
    return sorted(rows)


def _ancestor_map() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}

    def walk(node: dict, above: tuple[str, ...]) -> None:
        mid = node["LabelName"]
        if mid != ROOT_MID:
            out.setdefault(mid, set()).update(above)
            above = (*above, mid)
        for child in node.get("Subcategory", []):
            walk(child, above)

    walk(hierarchy_json(), ())
    return out


@dataclass(frozen=True)
class DemoSizes:
    n_train: int = 300
    n_validation: int = 120
    n_v5test: int = 60
    n_test: int = 40
    min_side: int = 160
    max_side: int = 256
    min_objects: int = 2
    max_objects: int = 5

    def count(self, split: str) -> int:
        return {"train": self.n_train, "validation": self.n_validation,
                "v5test": self.n_v5test, "test": self.n_test}[split]


# --------------------------------------------------------------------------- drawing


def _rotate(points: np.ndarray, cx: float, cy: float, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    rel = points - (cx, cy)
    return np.stack([rel[:, 0] * c - rel[:, 1] * s, rel[:, 0] * s + rel[:, 1] * c], 1) + (cx, cy)


def _polygon(canvas: np.ndarray, points: np.ndarray) -> None:
    cv2.fillPoly(canvas, [np.round(points * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)


def shape_mask(shape: str, height: int, width: int, cx: float, cy: float, r: float,
               aspect: float, angle: float) -> np.ndarray:
    """Boolean mask of one shape of half-size ``r`` centred at (cx, cy)."""
    canvas = np.zeros((height, width), np.uint8)
    ry = r * aspect
    if shape == "rectangle":
        pts = np.array([[cx - r, cy - ry * 0.7], [cx + r, cy - ry * 0.7],
                        [cx + r, cy + ry * 0.7], [cx - r, cy + ry * 0.7]])
        _polygon(canvas, _rotate(pts, cx, cy, angle))
    elif shape == "diamond":
        pts = np.array([[cx, cy - ry], [cx + r * 0.8, cy], [cx, cy + ry], [cx - r * 0.8, cy]])
        _polygon(canvas, _rotate(pts, cx, cy, angle * 0.5))
    elif shape == "triangle":
        pts = np.array([[cx, cy - ry], [cx + r, cy + ry * 0.8], [cx - r, cy + ry * 0.8]])
        _polygon(canvas, _rotate(pts, cx, cy, angle))
    elif shape == "hexagon":
        t = np.arange(6) * math.pi / 3 + angle
        _polygon(canvas, np.stack([cx + r * np.cos(t), cy + ry * np.sin(t)], 1))
    elif shape == "star":
        t = np.arange(10) * math.pi / 5 - math.pi / 2 + angle
        rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        _polygon(canvas, np.stack([cx + r * rad * np.cos(t), cy + r * rad * np.sin(t)], 1))
    elif shape == "cross":
        arm = 0.32
        for pts in (np.array([[cx - r, cy - r * arm], [cx + r, cy - r * arm],
                              [cx + r, cy + r * arm], [cx - r, cy + r * arm]]),
                    np.array([[cx - r * arm, cy - r], [cx + r * arm, cy - r],
                              [cx + r * arm, cy + r], [cx - r * arm, cy + r]])):
            _polygon(canvas, _rotate(pts, cx, cy, angle))
    elif shape == "lshape":
        w = 0.4
        pts = np.array([[cx - r, cy - ry], [cx - r + 2 * r * w, cy - ry],
                        [cx - r + 2 * r * w, cy + ry - 2 * ry * w], [cx + r, cy + ry - 2 * ry * w],
                        [cx + r, cy + ry], [cx - r, cy + ry]])
        _polygon(canvas, _rotate(pts, cx, cy, angle))
    elif shape in ("ellipse", "ring", "halfdisc"):
        centre = (int(round(cx * 16)), int(round(cy * 16)))
        deg = math.degrees(angle)
        if shape == "halfdisc":
            axes = (int(round(r * 16)), int(round(r * 16)))
            cv2.ellipse(canvas, centre, axes, deg, 180, 360, 1, -1, cv2.LINE_8, 4)
            canvas = np.roll(canvas, int(round(r * 0.5)), axis=0)  # centre the half-disc
        elif shape == "ellipse":
            axes = (int(round(r * 16)), int(round(r * 0.62 * 16)))
            cv2.ellipse(canvas, centre, axes, deg, 0, 360, 1, -1, cv2.LINE_8, 4)
        else:
            axes = (int(round(r * 16)), int(round(r * 16)))
            cv2.ellipse(canvas, centre, axes, 0, 0, 360, 1, -1, cv2.LINE_8, 4)
            inner = (int(round(r * 0.55 * 16)),) * 2
            cv2.ellipse(canvas, centre, inner, 0, 0, 360, 0, -1, cv2.LINE_8, 4)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return canvas.astype(bool)


@dataclass
class DemoObject:
    leaf: int                 # index into LEAVES
    visible: np.ndarray       # bool H x W
    full_area: int
    has_mask: bool = True


@dataclass
class DemoImage:
    image_id: str
    pixels: np.ndarray        # uint8 H x W x 3 (RGB)
    objects: list[DemoObject]
    group: tuple[int, tuple[float, float, float, float]] | None  # leaf, (x0, x1, y0, y1) normalised
    mask_scale: float


def _place_objects(rng: np.random.Generator, h: int, w: int, n: int,
                   weights: np.ndarray) -> list[DemoObject]:
    objects: list[DemoObject] = []
    for _ in range(n):
        leaf = int(rng.choice(len(LEAVES), p=weights))
        for _attempt in range(25):
            r = float(rng.uniform(0.11, 0.22) * min(h, w))
            cx = float(rng.uniform(r, w - r))
            cy = float(rng.uniform(r, h - r))
            full = shape_mask(LEAVES[leaf].shape, h, w, cx, cy, r,
                              float(rng.uniform(0.8, 1.2)), float(rng.uniform(-0.2, 0.2)))
            area = int(full.sum())
            if area < 40:
                continue
            covered = [o.visible & ~full for o in objects]
            if all(c.sum() >= 0.5 * o.full_area for c, o in zip(covered, objects)):
                for o, c in zip(objects, covered):
                    o.visible = c
                objects.append(DemoObject(leaf, full, area))
                break
    return objects


def _group_of(rng: np.random.Generator, h: int, w: int,
              weights: np.ndarray) -> tuple[int, np.ndarray]:
    """A cluster of 3-5 small same-class shapes (annotated as one group box)."""
    leaf = int(rng.choice(len(LEAVES), p=weights))
    union = np.zeros((h, w), bool)
    gx, gy = rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.75) * h
    for _ in range(int(rng.integers(3, 6))):
        r = float(rng.uniform(5, 8))
        cx = float(np.clip(gx + rng.uniform(-22, 22), r, w - r))
        cy = float(np.clip(gy + rng.uniform(-22, 22), r, h - r))
        union |= shape_mask(LEAVES[leaf].shape, h, w, cx, cy, r, 1.0, 0.0)
    return leaf, union


def _tight_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Normalised (XMin, XMax, YMin, YMax) of a boolean mask."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return xs.min() / w, (xs.max() + 1) / w, ys.min() / h, (ys.max() + 1) / h


def render_image(rng: np.random.Generator, image_id: str, sizes: DemoSizes,
                 weights: np.ndarray, *, with_group: bool) -> DemoImage:
    w = int(rng.integers(sizes.min_side, sizes.max_side + 1))
    h = int(rng.integers(sizes.min_side, sizes.max_side + 1))
    background = rng.integers(35, 95, size=3)
    pixels = np.empty((h, w, 3), np.float32)
    pixels[:] = background
    group = None
    if with_group:
        leaf, union = _group_of(rng, h, w, weights)
        pixels[union] = LEAVES[leaf].rgb
    n = int(rng.integers(sizes.min_objects, sizes.max_objects + 1))
    objects = _place_objects(rng, h, w, n, weights)
    for obj in objects:  # painting order = placement order: later objects on top
        jitter = rng.integers(-12, 13, size=3)
        pixels[obj.visible] = np.clip(np.array(LEAVES[obj.leaf].rgb) + jitter, 0, 255)
    if with_group:
        still = union & ~np.any([o.visible for o in objects], axis=0) if objects else union
        if still.any():
            group = (leaf, _tight_box(still))
    pixels += rng.normal(0.0, 5.0, size=pixels.shape)
    scale = float(rng.choice([0.5, 0.75, 1.25, 1.5]))
    return DemoImage(image_id, np.clip(pixels, 0, 255).astype(np.uint8), objects, group, scale)


# --------------------------------------------------------------------------- encoding


def _png_bytes(mask: np.ndarray, scale: float) -> bytes:
    h, w = mask.shape
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    small = cv2.resize(mask.astype(np.uint8) * 255, size, interpolation=cv2.INTER_NEAREST)
    buf = io.BytesIO()
    Image.fromarray(small, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _jpeg_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def _fmt(x: float) -> str:
    return f"{x:.6f}".rstrip("0").rstrip(".") if x not in (0.0, 1.0) else str(int(x))


def _clicks(rng: np.random.Generator, mask: np.ndarray) -> str:
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    pick = rng.choice(len(xs), size=min(len(xs), int(rng.integers(3, 7))), replace=False)
    return ";".join(f"{(xs[k] + 0.5) / w:.5f} {(ys[k] + 0.5) / h:.5f} 1" for k in pick)


def _write_csv(path: Path, header: list[str] | None, rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        if header:
            writer.writerow(header)
        writer.writerows(rows)


def _zip_write(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=(2019, 5, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def _image_ids(rng: np.random.Generator, total: int) -> list[str]:
    """Unique 16-hex-digit IDs; the first is the seed's drop-listed image."""
    ids = ["1d5ef05c8da80e31"]
    seen = set(ids)
    while len(ids) < total:
        new = "".join(HEX[d] for d in rng.integers(0, 16, size=16))
        if new not in seen:
            seen.add(new)
            ids.append(new)
    return ids


# --------------------------------------------------------------------------- generator


def generate_demo(out_dir: str | Path, seed: int = 0, sizes: DemoSizes = DemoSizes()) -> dict:
    """Write the demo dataset to ``out_dir`` atomically (built in a sibling
    temporary folder, then renamed). An existing ``out_dir`` is replaced only
    if it is empty or an earlier demo (it has ``demo_manifest.json``)."""
    out_dir = Path(out_dir)
    # Snakemake creates the (empty) folders of a rule's outputs beforehand
    has_files = out_dir.exists() and any(p.is_file() for p in out_dir.rglob("*"))
    if has_files and not (out_dir / MANIFEST).is_file():
        raise InputError(f"{out_dir}: exists, is not empty and is not a demo dataset; "
                         "refusing to overwrite it")
    for name in SPLITS:
        if sizes.count(name) < 0:
            raise InputError(f"demo size for {name} must be >= 0")
    if sizes.min_side < 64 or sizes.max_side < sizes.min_side:
        raise InputError(f"demo image sides must satisfy 64 <= min <= max, "
                         f"got {sizes.min_side}..{sizes.max_side}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        manifest = _generate_into(tmp, seed, sizes)
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old.{os.getpid()}")
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _generate_into(root: Path, seed: int, sizes: DemoSizes) -> dict:
    rng = np.random.default_rng(seed)
    weights = np.array([c.weight for c in LEAVES], dtype=np.float64)
    weights /= weights.sum()
    ancestors = _ancestor_map()
    parent_mids = sorted(PARENTS)

    (root / FILES["hierarchy"]).write_text(json.dumps(hierarchy_json(), indent=1) + "\n")
    _write_csv(root / FILES["classes"], None, [list(r) for r in class_descriptions()])
    (root / "masks").mkdir()

    total = sum(sizes.count(s) for s in SPLITS)
    all_ids = _image_ids(rng, total)
    counts: dict[str, dict] = {}
    start = 0
    box_counter = 0
    for split in SPLITS:
        ids = all_ids[start:start + sizes.count(split)]
        start += len(ids)
        image_dir = root / "images" / split
        image_dir.mkdir(parents=True)
        mask_rows: list[list] = []
        bbox_rows: list[list] = []
        label_rows: list[list] = []
        test_rows: list[list] = []
        pngs: dict[str, bytes] = {}
        for k, image_id in enumerate(ids):
            image = render_image(rng, image_id, sizes, weights,
                                 with_group=split in ("train", "validation") and k % 9 == 4)
            (image_dir / f"{image_id}.jpg").write_bytes(_jpeg_bytes(image.pixels))
            h, w = image.pixels.shape[:2]
            if split == "test":
                test_rows.append([image_id, w, h, ""])
                continue
            present: set[str] = set()
            used_box_ids: set[str] = set()
            for obj in image.objects:
                leaf = LEAVES[obj.leaf]
                present.add(leaf.mid)
                x0, x1, y0, y1 = _tight_box(obj.visible)
                box_counter += 1
                box_only = split != "v5test" and box_counter % 11 == 7
                if split != "v5test":
                    bbox_rows.append([image_id, leaf.mid, _fmt(x0), _fmt(x1), _fmt(y0),
                                      _fmt(y1), 0])
                if box_only:
                    continue
                box_id = "".join(HEX[d] for d in rng.integers(0, 16, size=8))
                while box_id in used_box_ids:
                    box_id = "".join(HEX[d] for d in rng.integers(0, 16, size=8))
                used_box_ids.add(box_id)
                mask_path = f"{image_id}_{leaf.mid.replace('/', '')}_{box_id}.png"
                pngs[mask_path] = _png_bytes(obj.visible, image.mask_scale)
                mask_rows.append([mask_path, image_id, leaf.mid, box_id, _fmt(x0), _fmt(x1),
                                  _fmt(y0), _fmt(y1), f"{rng.uniform(0.55, 0.95):.5f}",
                                  _clicks(rng, obj.visible)])
            if image.group is not None:
                leaf_idx, (x0, x1, y0, y1) = image.group
                present.add(LEAVES[leaf_idx].mid)
                bbox_rows.append([image_id, LEAVES[leaf_idx].mid, _fmt(x0), _fmt(x1),
                                  _fmt(y0), _fmt(y1), 1])
            if split == "v5test":
                continue
            for mid in sorted(present):
                label_rows.append([image_id, mid, 1])
            absent = [c.mid for c in LEAVES if c.mid not in present]
            for j in rng.choice(len(absent), size=min(len(absent), int(rng.integers(1, 3))),
                                replace=False):
                label_rows.append([image_id, absent[j], 0])
            if k % 5 == 0:  # a verified-absent parent (none of its leaves present)
                free = [p for p in parent_mids
                        if not any(p in ancestors[m] for m in present)]
                if free:
                    label_rows.append([image_id, free[int(rng.integers(len(free)))], 0])
        if split == "test":
            _write_csv(root / FILES["test_list"], TEST_HEADER, test_rows)
        else:
            key = {"train": "train", "validation": "val", "v5test": "v5test"}[split]
            _write_csv(root / FILES[f"{key}_masks"], MASK_HEADER,
                       sorted(mask_rows, key=lambda r: (r[1], r[0])))
            if split != "v5test":
                _write_csv(root / FILES[f"{key}_bbox"], BBOX_HEADER,
                           sorted(bbox_rows, key=lambda r: r[0]))
                _write_csv(root / FILES[f"{key}_labels"], LABEL_HEADER,
                           sorted(label_rows, key=lambda r: r[0]))
            for shard in HEX:
                with zipfile.ZipFile(root / "masks" / f"{ZIP_PREFIX[split]}{shard}.zip", "w") as zf:
                    for name in sorted(n for n in pngs if n[0] == shard):
                        _zip_write(zf, name, pngs[name])
        counts[split] = {"images": len(ids), "masks": len(mask_rows), "boxes": len(bbox_rows),
                         "labels": len(label_rows)}
    manifest = {"seed": seed, "sizes": asdict(sizes), "files": FILES,
                "leaf_classes": [c.mid for c in LEAVES], "counts": counts}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest
