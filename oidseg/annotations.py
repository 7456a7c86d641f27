"""Annotation pickles in mmdet 3.x format (SPEC section 3, docs/ARCHITECTURE.md).

- :func:`select_heldout`: seeded random held-out subset of validation images.
- :func:`leaf_rows` / :func:`parent_rows`: mask rows labelled with a leaf class,
  or expanded to every ancestor (plus the row's own class) and reduced to the
  parent classes.
- :func:`build_records`: one mmdet record per image from a block of rows;
  boxes become absolute xyxy pixels (normalised box x [w, h, w, h]).
- :func:`image_list_records` / :func:`split_shards`: instance-free image lists
  (held-out validation, test shards).
- :func:`check_mask_files`: every referenced mask PNG exists in the extracted
  folder and starts with a valid PNG header (pixels are decoded lazily at
  training time).

Everything is vectorised over rows (pandas factorize + numpy); the only Python
loops build the output dicts themselves, one per instance and one per image.
"""

from __future__ import annotations

import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from oidseg.errors import InputError
from oidseg.hierarchy import Hierarchy
from oidseg.raw import SizeLookup

#: the image the seed dropped (known bad annotation)
DEFAULT_DROP_IMAGES = ("1d5ef05c8da80e31",)
SOURCES = ("train", "validation", "v5test")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class RowBlock:
    """Mask rows of one source, reduced to one label space."""

    image_ids: np.ndarray   # object[n]
    labels: np.ndarray      # int64[n], 0-based in the target class list
    boxes: np.ndarray       # float64[n, 4] normalised XMin, YMin, XMax, YMax
    mask_files: np.ndarray  # object[n]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Source:
    """Where one source's images and extracted masks live, and their sizes."""

    name: str           # train | validation | v5test
    image_dir: str
    mask_dir: str
    sizes: SizeLookup


# --------------------------------------------------------------------------- selection


def select_heldout(image_ids: Iterable[str], size: int, seed: int,
                   drop: Iterable[str] = DEFAULT_DROP_IMAGES, *,
                   source: str = "validation masks") -> np.ndarray:
    """Sorted random subset of ``size`` distinct images (drop list excluded)."""
    candidates = np.unique(np.asarray(list(image_ids), dtype=object).astype(str))
    candidates = candidates[~np.isin(candidates, np.asarray(list(drop), dtype=str))]
    if size < 0 or size > len(candidates):
        raise InputError(
            f"{source}: cannot hold out {size} images, only {len(candidates)} validation "
            "images have masks"
        )
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(candidates), size=size, replace=False)
    return np.sort(candidates[chosen]).astype(object)


def exclude_images(masks: pd.DataFrame, images: Iterable[str]) -> pd.DataFrame:
    """Rows of ``masks`` whose ImageID is not in ``images``."""
    images = list(images)
    if not images:
        return masks
    keep = ~masks["ImageID"].isin(pd.Index(images)).to_numpy()
    return masks.loc[keep]


def _block(masks: pd.DataFrame, rows: np.ndarray, labels: np.ndarray) -> RowBlock:
    boxes = np.stack(
        [masks[c].to_numpy(dtype=np.float64)[rows]
         for c in ("BoxXMin", "BoxYMin", "BoxXMax", "BoxYMax")], axis=1,
    ) if len(rows) else np.zeros((0, 4))
    return RowBlock(
        image_ids=masks["ImageID"].to_numpy(dtype=object)[rows],
        labels=labels.astype(np.int64),
        boxes=boxes,
        mask_files=masks["MaskPath"].to_numpy(dtype=object)[rows],
    )


def _class_index(masks: pd.DataFrame, hierarchy: Hierarchy) -> np.ndarray:
    index = pd.Index(list(hierarchy.classes)).get_indexer(masks["LabelName"])
    if (index < 0).any():  # raw.read_masks_csv has checked MIDs; keep a guard
        bad = masks["LabelName"].to_numpy()[index < 0][0]
        raise InputError(f"masks: unknown MID {bad!r}")
    return index


def leaf_rows(masks: pd.DataFrame, hierarchy: Hierarchy) -> RowBlock:
    """Rows whose class is a leaf; labels index ``hierarchy.leaf_classes``."""
    leaf_pos = {m: i for i, m in enumerate(hierarchy.leaf_classes)}
    lookup = np.array([leaf_pos.get(m, -1) for m in hierarchy.classes], dtype=np.int64)
    labels = lookup[_class_index(masks, hierarchy)]
    rows = np.flatnonzero(labels >= 0)
    return _block(masks, rows, labels[rows])


def parent_targets(hierarchy: Hierarchy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class (hierarchy order): the parent-class labels its rows become.

    A row yields one copy per ancestor plus itself, keeping only parent
    classes. Returns ``(counts, offsets, flat)``: class ``c`` maps to
    ``flat[offsets[c]:offsets[c] + counts[c]]``.
    """
    parent_pos = {m: i for i, m in enumerate(hierarchy.parent_classes)}
    per_class = [
        [parent_pos[a] for a in (mid, *hierarchy.ancestors.get(mid, ())) if a in parent_pos]
        for mid in hierarchy.classes
    ]
    counts = np.array([len(t) for t in per_class], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    flat = np.array([t for ts in per_class for t in ts], dtype=np.int64)
    return counts, offsets, flat


def parent_rows(masks: pd.DataFrame, hierarchy: Hierarchy) -> RowBlock:
    """Rows copied once per ancestor (the mask stays the child's), reduced to
    the parent classes; labels index ``hierarchy.parent_classes``."""
    counts, offsets, flat = parent_targets(hierarchy)
    cls = _class_index(masks, hierarchy)
    per_row = counts[cls]
    total = int(per_row.sum())
    rows = np.repeat(np.arange(len(cls), dtype=np.int64), per_row)
    starts = np.repeat(np.cumsum(per_row) - per_row, per_row)
    within = np.arange(total, dtype=np.int64) - starts
    labels = flat[offsets[cls[rows]] + within] if total else np.zeros(0, np.int64)
    return _block(masks, rows, labels)


# --------------------------------------------------------------------------- records


def build_records(block: RowBlock, source: Source) -> list[dict]:
    """One mmdet record per image of ``block`` (images sorted by ImageID,
    instances in row order)."""
    if len(block) == 0:
        return []
    codes, uniques = pd.factorize(block.image_ids, sort=True)
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=len(uniques))
    ends = np.cumsum(counts)
    image_ids = [str(u) for u in uniques]
    widths, heights = source.sizes(image_ids)
    widths = np.asarray(widths, dtype=np.int64)
    heights = np.asarray(heights, dtype=np.int64)
    scale = np.stack([widths, heights, widths, heights], axis=1).astype(np.float64)
    boxes = (block.boxes[order] * scale[codes[order]]).tolist()
    labels = block.labels[order].tolist()
    masks = block.mask_files[order].tolist()
    instances = [
        {"bbox": b, "bbox_label": lab, "mask_file": m, "ignore_flag": 0}
        for b, lab, m in zip(boxes, labels, masks)
    ]
    img_dir, mask_dir, name = source.image_dir, source.mask_dir, source.name
    return [
        {"img_id": i, "img_path": f"{img_dir}/{i}.jpg", "width": w, "height": h,
         "source": name, "mask_dir": mask_dir, "instances": instances[e - n:e]}
        for i, w, h, n, e in zip(image_ids, widths.tolist(), heights.tolist(),
                                 counts.tolist(), ends.tolist())
    ]


def annotation_dict(classes: Sequence[str], hierarchy: Hierarchy,
                    data_list: list[dict], **extra) -> dict:
    return {
        "metainfo": {"classes": list(classes),
                     "names": [hierarchy.names[c] for c in classes], **extra},
        "data_list": data_list,
    }


def split_shards(items: Sequence, n_shards: int) -> list[list]:
    """``n_shards`` contiguous chunks of ceil(N / n_shards) items (trailing
    chunks may be short or empty)."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    items = list(items)
    chunk = -(-len(items) // n_shards)
    return [items[k * chunk:(k + 1) * chunk] for k in range(n_shards)]


def image_list_records(image_ids: Sequence[str], image_dir: str, sizes: SizeLookup,
                       source: str) -> list[dict]:
    """Instance-free records (inference input) for images in list order."""
    image_ids = [str(i) for i in image_ids]
    if not image_ids:
        return []
    widths, heights = sizes(image_ids)
    return [
        {"img_id": i, "img_path": f"{image_dir}/{i}.jpg", "width": int(w),
         "height": int(h), "source": source, "instances": []}
        for i, w, h in zip(image_ids, np.asarray(widths).tolist(),
                           np.asarray(heights).tolist())
    ]


def check_disjoint(frames: dict[str, pd.DataFrame], files: dict[str, str]) -> None:
    """An image may not appear in two sources (it would get two records)."""
    seen: dict[str, np.ndarray] = {}
    for name, frame in frames.items():
        ids = frame["ImageID"].unique()
        for other, other_ids in seen.items():
            common = np.intersect1d(ids.astype(str), other_ids.astype(str))
            if len(common):
                raise InputError(
                    f"{files[name]}: image {common[0]} also appears in {files[other]}"
                )
        seen[name] = ids


# --------------------------------------------------------------------------- mask files


def _png_header_problem(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(24)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    return png_bytes_problem(head)


def png_bytes_problem(data: bytes) -> str | None:
    """The PNG signature/IHDR size check on the first 24 bytes of a file
    (also on in-memory bytes while extracting zips)."""
    if len(data) < 24 or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        return "not a PNG file (bad signature or header)"
    width, height = struct.unpack(">II", data[16:24])
    if width == 0 or height == 0:
        return f"PNG has size {width}x{height}"
    return None


def check_mask_files(mask_dir: str | Path, masks: pd.DataFrame, csv_path: str, *,
                     png_check: str = "header", threads: int = 8) -> None:
    """Every ``MaskPath`` of ``masks`` exists in ``mask_dir`` (one directory
    listing, vectorised lookup); with ``png_check="header"`` each file's PNG
    signature and IHDR are read too."""
    if png_check not in ("header", "exists", "none"):
        raise ValueError(f"png_check must be header, exists or none, not {png_check!r}")
    if png_check == "none" or len(masks) == 0:
        return
    mask_dir = Path(mask_dir)
    try:
        present = os.listdir(mask_dir)
    except OSError as exc:
        raise InputError(f"{mask_dir}: extracted mask folder is unreadable ({exc})") from exc
    names = masks["MaskPath"]
    missing = ~names.isin(pd.Index(present)).to_numpy()
    if missing.any():
        first = int(np.flatnonzero(missing)[0])
        raise InputError(
            f"{mask_dir / names.iloc[first]}: mask PNG is missing "
            f"({csv_path}: row {masks.index[first] + 1} / {masks['ImageID'].iloc[first]}; "
            f"{int(missing.sum())} missing in all)"
        )
    if png_check == "exists":
        return
    paths = [os.path.join(mask_dir, n) for n in names.tolist()]
    with ThreadPoolExecutor(threads) as pool:
        problems = list(pool.map(_png_header_problem, paths, chunksize=256))
    k = next((k for k, problem in enumerate(problems) if problem is not None), None)
    if k is not None:
        raise InputError(
            f"{paths[k]}: mask PNG is {problems[k]} "
            f"({csv_path}: row {masks.index[k] + 1} / {masks['ImageID'].iloc[k]})"
        )


# --------------------------------------------------------------------------- whole sets


def leaf_annotations(hierarchy: Hierarchy, sources: Sequence[tuple[Source, pd.DataFrame]]) -> dict:
    """Leaf training set: every source's leaf rows, sources in the given order."""
    data_list: list[dict] = []
    for source, masks in sources:
        data_list.extend(build_records(leaf_rows(masks, hierarchy), source))
    return annotation_dict(hierarchy.leaf_classes, hierarchy, data_list)


def parent_annotations(hierarchy: Hierarchy,
                       sources: Sequence[tuple[Source, pd.DataFrame]]) -> dict:
    """Parent training set: rows expanded to ancestors, parent classes only."""
    data_list: list[dict] = []
    for source, masks in sources:
        data_list.extend(build_records(parent_rows(masks, hierarchy), source))
    return annotation_dict(hierarchy.parent_classes, hierarchy, data_list)
