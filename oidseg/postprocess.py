"""Post-processing of detection shards into a Kaggle submission (SPEC section 7).

Four steps, each streaming one image (one CSV line) at a time:

- :func:`convert`: detection shard pickle -> Kaggle CSV shard. The masks are
  already COCO compressed-RLE ``counts`` at the original image size; they are
  zlib-compressed and base64-encoded as they are, never decoded.
- :func:`expand`: a copy of each triple per ancestor class. With
  ``parents_only`` the original triple is dropped.
- :func:`merge`: mask NMS per image and class over two (or more) 25-class
  CSV shards of the same images.
- :func:`combine`: leaf CSV shards + merged CSV shards -> one submission in
  the image list's order.

Scores: triples are carried as their original text; only the score is parsed
(for thresholds and sorting), so expand/merge/combine never re-round a score
and the same input always gives byte-identical output. A score threshold
``thr`` keeps triples with ``score >= thr`` in expand and ``score > thr`` in
merge, as the original scripts did (merge's 0 keeps every positive score;
convert writes positive scores below 0.0000005 as 0.000001, so no detection is
lost to rounding).
"""

from __future__ import annotations

import json
import mmap
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from oidseg.errors import InputError, atomic_path, load_pickle
from oidseg.kaggle import (
    HEADER,
    ShardRow,
    ShardWriter,
    decode_mask,
    encode_mask,
    format_scores,
    iter_shard,
    parse_score,
    read_image_list,
    rle_area,
    split_predictions,
    valid_rle_string,
)

DETECTIONS_FORMAT = "oidseg-detections/1"


# --------------------------------------------------------------------------
# classes.json


@dataclass(frozen=True)
class ClassSet:
    """What post-processing needs from ``classes.json``."""

    classes: tuple[str, ...]
    ancestors: dict[str, tuple[str, ...]]


def load_classes_json(path: str | Path) -> ClassSet:
    """Read ``results/annotations/classes.json`` (``Hierarchy.to_json()``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read classes JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
        raise InputError(f"{path}: no 'classes' list")
    classes = tuple(str(c) for c in data["classes"])
    raw = data.get("ancestors")
    if not isinstance(raw, dict):
        raise InputError(f"{path}: no 'ancestors' map")
    known = set(classes)
    ancestors: dict[str, tuple[str, ...]] = {}
    for mid in classes:
        ups = raw.get(mid, [])
        if not isinstance(ups, list) or any(a not in known for a in ups):
            raise InputError(f"{path}: ancestors of {mid} are not a list of known classes")
        ancestors[mid] = tuple(ups)
    return ClassSet(classes=classes, ancestors=ancestors)


# --------------------------------------------------------------------------
# convert


def _check_detections(path: Path, shard: object) -> tuple[np.ndarray, list[dict]]:
    if not isinstance(shard, dict) or shard.get("format") != DETECTIONS_FORMAT:
        raise InputError(f"{path}: not a detection shard (format {DETECTIONS_FORMAT!r})")
    classes = shard.get("classes")
    images = shard.get("images")
    if not isinstance(classes, list) or not classes or not isinstance(images, list):
        raise InputError(f"{path}: detection shard needs 'classes' and 'images' lists")
    return np.array(classes, dtype=object), images


def _image_predictions(
    path: Path, index: int, image: dict, mids: np.ndarray
) -> tuple[str, int, int, str]:
    image_id = image.get("img_id")
    where = f"{path}: image {index} / {image_id}"
    if not isinstance(image_id, str) or not image_id or "," in image_id:
        raise InputError(f"{where}: bad img_id")
    width, height = image.get("width"), image.get("height")
    if (
        not isinstance(width, (int, np.integer))
        or not isinstance(height, (int, np.integer))
        or width <= 0
        or height <= 0
    ):
        raise InputError(f"{where}: width/height {width!r}/{height!r} are not positive integers")
    labels = np.asarray(image.get("labels", ()), dtype=np.int64).reshape(-1)
    scores = np.asarray(image.get("scores", ()), dtype=np.float64).reshape(-1)
    masks = image.get("masks", [])
    n = labels.size
    if scores.size != n or len(masks) != n:
        raise InputError(f"{where}: {n} labels, {scores.size} scores, {len(masks)} masks")
    if n == 0:
        return image_id, int(width), int(height), ""
    if labels.min() < 0 or labels.max() >= mids.size:
        raise InputError(f"{where}: label outside 0..{mids.size - 1}")
    if not np.all(np.isfinite(scores)) or scores.min() < 0 or scores.max() > 1 + 1e-6:
        raise InputError(f"{where}: score outside [0, 1]")
    score_text = format_scores(np.minimum(scores, 1.0))
    try:
        encoded = [encode_mask(m) for m in masks]
    except TypeError as exc:
        raise InputError(f"{where}: a mask is not RLE counts bytes ({exc})") from exc
    label_text = mids[labels]
    predictions = " ".join(
        f"{lab} {sc} {enc}" for lab, sc, enc in zip(label_text, score_text, encoded)
    )
    return image_id, int(width), int(height), predictions


def convert(detections: str | Path, out: str | Path) -> int:
    """Detection shard pickle -> Kaggle CSV shard; returns the image count."""
    detections = Path(detections)
    shard = load_pickle(detections, kind="detection shard")
    mids, images = _check_detections(detections, shard)
    seen: set[str] = set()
    with ShardWriter(out) as writer:
        for index, image in enumerate(images):
            if not isinstance(image, dict):
                raise InputError(f"{detections}: image {index}: not a dict")
            image_id, width, height, predictions = _image_predictions(
                detections, index, image, mids
            )
            if image_id in seen:
                raise InputError(f"{detections}: image {index} / {image_id}: duplicate img_id")
            seen.add(image_id)
            writer.write(image_id, width, height, predictions)
            images[index] = None  # free the masks as we go
    return writer.rows


# --------------------------------------------------------------------------
# expand


def expand_predictions(
    predictions: str,
    ancestors: dict[str, tuple[str, ...]],
    *,
    parents_only: bool,
    score_thr: float,
) -> str:
    """One PredictionString -> its expanded PredictionString.

    Output order: the kept original triples in input order (unless
    ``parents_only``), then for each kept triple in input order one copy per
    ancestor in ``ancestors`` order. Raises ``ValueError`` naming a bad
    token (unknown label, bad score)."""
    parts = split_predictions(predictions)
    originals: list[str] = []
    copies: list[str] = []
    for i in range(0, len(parts), 3):
        label, score, mask = parts[i], parts[i + 1], parts[i + 2]
        try:
            ups = ancestors[label]
        except KeyError:
            raise ValueError(f"unknown LabelName {label!r}") from None
        if parse_score(score) < score_thr:  # the original drops only score < thres
            continue
        tail = f" {score} {mask}"
        if not parents_only:
            originals.append(label + tail)
        copies.extend(a + tail for a in ups)
    return " ".join(originals + copies)


def expand(
    input_csv: str | Path,
    classes: ClassSet,
    out: str | Path,
    *,
    parents_only: bool,
    score_thr: float = 0.0,
) -> int:
    """CSV shard -> expanded CSV shard; returns the number of output triples."""
    triples = 0
    with ShardWriter(out) as writer:
        for row in iter_shard(input_csv):
            try:
                expanded = expand_predictions(
                    row.predictions,
                    classes.ancestors,
                    parents_only=parents_only,
                    score_thr=score_thr,
                )
            except ValueError as exc:
                raise InputError(f"{input_csv}: row {row.row} / {row.image_id}: {exc}") from exc
            triples += expanded.count(" ") // 3 + 1 if expanded else 0
            writer.write(row.image_id, row.width, row.height, expanded)
    return triples


# --------------------------------------------------------------------------
# merge (mask NMS)


class RleSet:
    """The masks of one image (compressed-RLE counts at h x w) with area,
    tight box (x, y, w, h) and mask IoU matrices (pycocotools' public
    ``mask`` API, iscrowd 0)."""

    def __init__(self, counts: Sequence[bytes], height: int, width: int):
        from pycocotools import mask as mask_utils

        self.n = len(counts)
        for i, c in enumerate(counts):
            if not valid_rle_string(c):
                raise ValueError(f"mask {i + 1} is not a valid COCO RLE")
        self._dicts = [{"size": [height, width], "counts": c} for c in counts]
        if self.n == 0:
            self.areas = np.zeros(0, dtype=np.int64)
            self.boxes = np.zeros((0, 4), dtype=np.float64)
            return
        self.areas = rle_area(self._dicts)
        self.boxes = np.asarray(mask_utils.toBbox(self._dicts), dtype=np.float64).reshape(-1, 4)

    def ious(self, rows: Sequence[int], cols: Sequence[int]) -> np.ndarray:
        """Mask IoU matrix of masks ``rows`` x ``cols``: one
        ``pycocotools.mask.iou`` call."""
        from pycocotools import mask as mask_utils

        if not len(rows) or not len(cols):
            return np.zeros((len(rows), len(cols)), dtype=np.float64)
        d = [self._dicts[i] for i in rows]
        g = [self._dicts[j] for j in cols]
        out = mask_utils.iou(d, g, [0] * len(g))
        return np.asarray(out, dtype=np.float64).reshape(len(d), len(g))


class _Subset:
    """A view of some masks of an :class:`RleSet`, re-indexed 0..k-1."""

    def __init__(self, rles: RleSet, index: np.ndarray):
        self._rles, self._index = rles, index.tolist()
        self.areas = rles.areas[index]
        self.boxes = rles.boxes[index]

    def ious(self, rows: Sequence[int], cols: Sequence[int]) -> np.ndarray:
        return self._rles.ious([self._index[i] for i in rows], [self._index[j] for j in cols])


def _candidate_pairs(
    block_end: np.ndarray, boxes: np.ndarray, areas: np.ndarray, iou_thr: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j), i < j, of positions in the same block whose mask IoU
    CAN reach ``iou_thr``, sorted by i then j. ``block_end[k]`` is the end
    of position k's block; boxes/areas are given per position.

    Exact pruning: the intersection is at most min(box overlap, area i,
    area j), and IoU >= thr needs intersection >= thr * (a_i + a_j) / (1 + thr).
    """
    n = block_end.size
    partners = block_end - np.arange(n) - 1
    total = int(partners.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ii = np.repeat(np.arange(n), partners)
    offset = np.arange(total) - np.repeat(np.cumsum(partners) - partners, partners)
    jj = ii + 1 + offset
    x1, y1 = boxes[:, 0], boxes[:, 1]
    x2, y2 = x1 + boxes[:, 2], y1 + boxes[:, 3]
    ow = np.minimum(x2[ii], x2[jj]) - np.maximum(x1[ii], x1[jj])
    oh = np.minimum(y2[ii], y2[jj]) - np.maximum(y1[ii], y1[jj])
    upper = np.minimum(
        np.clip(ow, 0, None) * np.clip(oh, 0, None), np.minimum(areas[ii], areas[jj])
    )
    need = iou_thr * (areas[ii] + areas[jj]) / (1.0 + iou_thr)
    ok = upper >= need - 1e-6
    return ii[ok], jj[ok]


def mask_nms(
    labels: Sequence[str], scores: np.ndarray, masks: RleSet, iou_thr: float
) -> np.ndarray:
    """Greedy mask NMS per class; returns the kept indices in input order.

    Per class, detections are visited by descending score; ties keep the
    input order (stable sort), so of two equal-score detections the earlier
    one is kept and suppresses the later one when their IoU is >= thr.
    Every detection with mask IoU >= ``iou_thr`` to a kept one is dropped.
    Different classes never suppress each other. Mask IoUs are computed only
    for the pairs that pass an exact area/box bound (:func:`_candidate_pairs`).
    """
    n = len(labels)
    keep = np.ones(n, dtype=bool)
    if n < 2:
        return np.flatnonzero(keep)
    _, cls = np.unique(np.asarray(labels, dtype=object), return_inverse=True)
    cls = cls.reshape(-1)
    order = np.lexsort((np.arange(n), -scores, cls))  # by class, score desc, input order
    cls_sorted = cls[order]
    block_start = np.flatnonzero(np.r_[True, cls_sorted[1:] != cls_sorted[:-1]])
    block_len = np.diff(np.r_[block_start, n])
    block_end = np.repeat(block_start + block_len, block_len)
    first, second = _candidate_pairs(
        block_end, masks.boxes[order], masks.areas[order].astype(np.float64), iou_thr
    )
    # pairs (i, j), i before j in the walk, sorted by i: when i's pairs come,
    # i's own fate is settled (every pair (k, i) came before)
    alive = [True] * n
    over = _pair_ious(masks, order, block_end, first, second) >= iou_thr
    for i, j, o in zip(first.tolist(), second.tolist(), over.tolist()):
        if o and alive[i] and alive[j]:
            alive[j] = False
    keep[order[~np.array(alive, dtype=bool)]] = False
    return np.flatnonzero(keep)


def _pair_ious(
    masks: RleSet, order: np.ndarray, block_end: np.ndarray, first: np.ndarray, second: np.ndarray
) -> np.ndarray:
    """Mask IoU of each candidate pair (positions ``first[k]``, ``second[k]``
    of the walk ``order``) with one :meth:`RleSet.ious` call per class: the
    class's first members x its second members."""
    out = np.empty(first.size, dtype=np.float64)
    block = block_end[first]  # pairs come sorted by first, so by class
    bounds = np.flatnonzero(np.r_[True, block[1:] != block[:-1], True])
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        rows, cols = np.unique(first[lo:hi]), np.unique(second[lo:hi])
        matrix = masks.ious(order[rows].tolist(), order[cols].tolist())
        out[lo:hi] = matrix[
            np.searchsorted(rows, first[lo:hi]), np.searchsorted(cols, second[lo:hi])
        ]
    return out


def merge_predictions(
    predictions: Sequence[str],
    width: int,
    height: int,
    *,
    iou_thr: float,
    score_thr: float,
) -> str:
    """Concatenate PredictionStrings, keep ``score > score_thr``, drop empty
    masks, then :func:`mask_nms`. Kept triples stay in input order (first
    input first) with their original text. Raises ``ValueError``."""
    labels: list[str] = []
    score_text: list[str] = []
    masks: list[str] = []
    for text in predictions:
        parts = split_predictions(text)
        labels.extend(parts[0::3])
        score_text.extend(parts[1::3])
        masks.extend(parts[2::3])
    if not labels:
        return ""
    scores = np.array([parse_score(s) for s in score_text], dtype=np.float64)
    candidates = np.flatnonzero(scores > score_thr)
    counts = []
    for i in candidates:
        try:
            counts.append(decode_mask(masks[i], height, width))  # bounded by H x W
        except ValueError as exc:
            raise ValueError(f"triple {i + 1} ({labels[i]}): {exc}") from None
    rles = RleSet(counts, height, width)
    non_empty = np.flatnonzero(rles.areas > 0)
    kept_local = non_empty[
        mask_nms(
            [labels[candidates[k]] for k in non_empty],
            scores[candidates[non_empty]],
            _Subset(rles, non_empty),
            iou_thr,
        )
    ]
    kept = candidates[kept_local]
    return " ".join(f"{labels[i]} {score_text[i]} {masks[i]}" for i in kept)


def merge(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    iou_thr: float = 0.5,
    score_thr: float = 0.0,
) -> int:
    """Mask-NMS merge of CSV shards holding the same images in the same
    order; returns the number of output triples."""
    if not inputs:
        raise InputError("merge: no input CSV")
    readers = [iter_shard(p) for p in inputs]
    triples = 0
    with ShardWriter(out) as writer:
        while True:
            rows: list[ShardRow | None] = [next(r, None) for r in readers]
            if all(r is None for r in rows):
                break
            first = rows[0]
            for path, row in zip(inputs, rows):
                if row is None or first is None:
                    ended = path if row is None else inputs[0]
                    raise InputError(f"{ended}: ends before the other merge inputs")
                if (row.image_id, row.width, row.height) != (
                    first.image_id,
                    first.width,
                    first.height,
                ):
                    raise InputError(
                        f"{path}: row {row.row} / {row.image_id}: expected image "
                        f"{first.image_id} ({first.width}x{first.height}) as in "
                        f"{inputs[0]}, got {row.image_id} ({row.width}x{row.height}); "
                        "merge inputs must list the same images in the same order"
                    )
            assert first is not None
            try:
                merged = merge_predictions(
                    [r.predictions for r in rows if r is not None],
                    first.width,
                    first.height,
                    iou_thr=iou_thr,
                    score_thr=score_thr,
                )
            except ValueError as exc:
                raise InputError(
                    f"{', '.join(map(str, inputs))}: row {first.row} / {first.image_id}: {exc}"
                ) from exc
            triples += merged.count(" ") // 3 + 1 if merged else 0
            writer.write(first.image_id, first.width, first.height, merged)
    return triples


# --------------------------------------------------------------------------
# combine


@dataclass(frozen=True)
class _Line:
    shard: int
    row: int
    width: bytes
    height: bytes
    pred_start: int
    pred_end: int


class _ShardIndex:
    """Byte offsets of every image line in a set of CSV shards (memory-mapped,
    nothing copied)."""

    def __init__(self, paths: Sequence[str | Path], what: str):
        self.paths = [Path(p) for p in paths]
        self.maps: list[mmap.mmap | bytes] = []
        self.lines: dict[bytes, _Line] = {}
        for k, path in enumerate(self.paths):
            self._index(k, path, what)

    def _index(self, k: int, path: Path, what: str) -> None:
        try:
            with open(path, "rb") as fh:
                size = fh.seek(0, 2)
                data: mmap.mmap | bytes = (
                    mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
                )
        except OSError as exc:
            raise InputError(f"{path}: cannot read {what} CSV ({exc})") from exc
        self.maps.append(data)
        end = data.find(b"\n")
        header = bytes(data[: end if end >= 0 else len(data)]).rstrip(b"\r")
        if header.startswith(b"\xef\xbb\xbf"):
            header = header[3:]
        if header != HEADER.encode():
            raise InputError(f"{path}: row 1: header is {header[:80]!r}, expected {HEADER!r}")
        pos, row, total = end + 1, 1, len(data)
        while 0 < pos < total:
            row += 1
            end = data.find(b"\n", pos)
            if end < 0:
                end = total
            line_end = end - 1 if end > pos and data[end - 1] == 13 else end  # '\r'
            head = bytes(data[pos : min(line_end, pos + 200)])
            fields = head.split(b",", 3)
            if line_end > pos:
                if len(fields) != 4 or b'"' in head:
                    raise InputError(
                        f"{path}: row {row}: expected 4 unquoted fields "
                        "ImageID,ImageWidth,ImageHeight,PredictionString"
                    )
                image_id, width, height = fields[0], fields[1], fields[2]
                name = image_id.decode("utf-8", "replace")
                if not (
                    width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0
                ):
                    raise InputError(f"{path}: row {row} / {name}: bad ImageWidth/ImageHeight")
                if image_id in self.lines:
                    other = self.lines[image_id]
                    raise InputError(
                        f"{path}: row {row} / {name}: ImageID also in "
                        f"{self.paths[other.shard]} row {other.row}"
                    )
                pred_start = pos + len(image_id) + len(width) + len(height) + 3
                self.lines[image_id] = _Line(k, row, width, height, pred_start, line_end)
            pos = end + 1

    def predictions(self, line: _Line) -> bytes:
        return bytes(self.maps[line.shard][line.pred_start : line.pred_end])

    def where(self, line: _Line) -> str:
        return f"{self.paths[line.shard]} row {line.row}"

    def close(self) -> None:
        for m in self.maps:
            if isinstance(m, mmap.mmap):
                m.close()


def combine(
    image_list: str | Path,
    leaf: Sequence[str | Path],
    merged: Sequence[str | Path],
    out: str | Path,
) -> int:
    """Leaf CSV shards + merged CSV shards -> submission CSV.

    Every image of ``image_list`` appears exactly once, in the list's order;
    its PredictionString is the leaf triples followed by the merged triples.
    Each listed image must appear exactly once in the leaf shards and once in
    the merged shards (with the same size); an image in the shards but not in
    the list is an error. Returns the number of images written.
    """
    ids = read_image_list(image_list)
    leaf_index = _ShardIndex(leaf, "leaf")
    merged_index = _ShardIndex(merged, "merged")
    try:
        listed = set(ids)
        for index, name in ((leaf_index, "leaf"), (merged_index, "merged")):
            for image_id, line in index.lines.items():
                if image_id.decode("utf-8", "replace") not in listed:
                    raise InputError(
                        f"{index.paths[line.shard]}: row {line.row} / "
                        f"{image_id.decode('utf-8', 'replace')}: "
                        f"{name} image not in the image list {image_list}"
                    )
        with atomic_path(out) as tmp, open(tmp, "wb", buffering=1 << 20) as fh:
            fh.write(HEADER.encode() + b"\n")
            for row, image_id in enumerate(ids, start=2):
                key = image_id.encode("utf-8")
                a = leaf_index.lines.get(key)
                b = merged_index.lines.get(key)
                for line, name in ((a, "leaf"), (b, "merged")):
                    if line is None:
                        raise InputError(
                            f"{image_list}: row {row} / {image_id}: not in the {name} shards"
                        )
                assert a is not None and b is not None
                if (a.width, a.height) != (b.width, b.height):
                    raise InputError(
                        f"{image_list}: row {row} / {image_id}: size "
                        f"{a.width.decode()}x{a.height.decode()} in {leaf_index.where(a)} but "
                        f"{b.width.decode()}x{b.height.decode()} in {merged_index.where(b)}"
                    )
                pa = leaf_index.predictions(a)
                pb = merged_index.predictions(b)
                sep = b" " if pa and pb else b""
                fh.write(b"%s,%s,%s,%s%s%s\n" % (key, a.width, a.height, pa, sep, pb))
    finally:
        leaf_index.close()
        merged_index.close()
    return len(ids)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
