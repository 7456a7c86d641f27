"""Any images in, instance masks out (the ``predict`` target, issue 21).

A folder of the user's images becomes image lists in the annotation stage's
format (docs/ARCHITECTURE.md), so the test set's inference and post-processing
run on it unchanged; this module does only what is new:

- :func:`scan_folder`: the folder's files, recursively, in a stable order
  (sorted relative POSIX paths); JPEG and PNG file names are images, every
  other file (and a hidden folder, not searched) is listed with the reason it
  is skipped.
- :func:`shard_of`: an image's shard, from a hash of its relative path, so
  that adding or removing an image changes one shard's list (and reruns one
  shard's inference), not all of them.
- :func:`image_id`: the ``ImageID`` of the Kaggle CSV: the relative path in
  Kaggle's ImageID alphabet, and a hash of the path (unique).
- :func:`read_shard` / :func:`write_shard_list`: a shard's image list, the
  sizes read from the images themselves (upright: :mod:`oidseg.images`, EXIF
  orientation applied), records marked ``"exif_orientation": True``; an
  unreadable image is an :class:`InputError` naming it, or with
  ``skip_unreadable`` listed as skipped.
- :func:`collect`: the shard lists -> ``images.csv`` (every image predicted,
  folder order) and ``skipped.csv`` (every file skipped, with the reason).
- :func:`write_coco`: the final Kaggle CSV -> COCO JSON (images, the
  categories with names and MIDs, one annotation per predicted mask with its
  score and compressed RLE).

The workflow lists the folder when it plans the jobs (``rules/predict.smk``),
so every image is an input of the jobs that read it and a changed folder is
seen by ``--dry-run``; each job lists the folder again and stops with an error
when the listing is not the one the plan was made from (a folder changed
while the workflow ran).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from oidseg.errors import InputError, atomic_path, atomic_pickle, load_pickle
from oidseg.images import is_image_name, read_upright

LIST_FORMAT = "oidseg-predict-list/1"
IMAGES_HEADER = ["ImageID", "File", "Width", "Height", "Shard"]
SKIPPED_HEADER = ["File", "Reason"]

#: reasons a file is skipped without being read
NOT_AN_IMAGE = "not a JPEG or PNG file name"
HIDDEN_FILE = "hidden file"
HIDDEN_FOLDER = "hidden folder, not searched"
BRACES = "'{' or '}' in its path (Snakemake cannot take it as an input)"
NOT_UTF8 = "its path is not UTF-8"
NOT_A_FILE = "not a regular file (a broken link, a socket, ...)"


@dataclass
class FolderScan:
    """Files of a folder, relative POSIX paths, sorted."""

    images: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def digest(self) -> str:
        """Changes when any listed path or reason changes."""
        return list_digest([*self.images, *(f"{p}\0{r}" for p, r in self.skipped)])


def list_digest(paths: Iterable[str]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()[:16]


def scan_folder(root: str | Path) -> FolderScan:
    """Every file under ``root`` (recursive; symbolic links to files are
    followed, to folders not), classified; see the module docstring. A
    missing folder is an :class:`InputError`."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: {'not a folder' if root.exists() else 'folder is missing'} (predict.images)")
    scan = FolderScan()
    skipped: list[tuple[str, str]] = []

    def walk_error(exc: OSError) -> None:
        raise InputError(f"{exc.filename}: cannot list the folder ({exc.strerror})")

    for dirpath, dirnames, filenames in os.walk(root, onerror=walk_error):
        rel_dir = Path(dirpath).relative_to(root)
        for name in sorted(dirnames):
            if name.startswith("."):
                skipped.append(((rel_dir / name).as_posix() + "/", HIDDEN_FOLDER))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            rel = (rel_dir / name).as_posix()
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                skipped.append((rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), NOT_UTF8))
                continue
            if name.startswith("."):
                skipped.append((rel, HIDDEN_FILE))
            elif not is_image_name(name):
                skipped.append((rel, NOT_AN_IMAGE))
            elif "{" in rel or "}" in rel:
                skipped.append((rel, BRACES))
            elif not os.path.isfile(os.path.join(dirpath, name)):
                skipped.append((rel, NOT_A_FILE))
            else:
                scan.images.append(rel)
    scan.images.sort()
    scan.skipped = sorted(skipped)
    return scan


def shard_of(relpath: str, n_shards: int) -> int:
    """The shard (0 .. n_shards - 1) of an image, from its relative path."""
    digest = hashlib.sha256(relpath.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % n_shards


def shard_files(images: Sequence[str], shard: int, n_shards: int) -> list[str]:
    return [p for p in images if shard_of(p, n_shards) == shard]


def image_id(relpath: str) -> str:
    """The ImageID of an image (Kaggle's ImageID alphabet: ASCII letters,
    digits, ``_`` and ``-``): its relative path with every run of other
    characters as ``_`` (at most 80 characters), then ``-`` and 8 hex digits
    of a hash of the path, so two paths never share an ID
    (``holiday/IMG 1.jpg`` -> ``holiday_IMG_1_jpg-cfbec441``)."""
    readable = re.sub(r"[^0-9A-Za-z_-]+", "_", relpath).strip("_")[:80] or "image"
    return f"{readable}-{hashlib.sha256(relpath.encode('utf-8')).hexdigest()[:8]}"


def check_listing(found: str, expected: str, root: str | Path, what: str) -> None:
    if found != expected:
        raise InputError(
            f"{root}: the folder changed after the workflow planned this job ({what} listed now: "
            f"{found}, planned: {expected}); run snakemake again")


# ------------------------------------------------------------------ shard lists


def read_shard(root: str | Path, files: Sequence[str], *, skip_unreadable: bool,
               progress: Callable[[str], None] | None = None) -> tuple[list[dict], list[tuple[str, str]]]:
    """Image-list records (docs/ARCHITECTURE.md) of ``files`` (relative to
    ``root``), their upright sizes read from the pixels, and the files
    skipped as unreadable (only with ``skip_unreadable``; else the first
    one raises :class:`InputError` naming it)."""
    records, skipped = [], []
    for k, rel in enumerate(files):
        path = os.path.join(os.fspath(root), rel)
        try:
            img = read_upright(path)
        except InputError as exc:
            if not skip_unreadable:
                raise InputError(f"{exc} (predict.skip_unreadable: true skips it)") from None
            skipped.append((rel, f"unreadable: {str(exc).removeprefix(path + ': ')}"))
            if progress:
                progress(f"[{k + 1}/{len(files)}] {rel}: skipped ({skipped[-1][1]})")
            continue
        height, width = img.shape[:2]
        records.append({"img_id": image_id(rel), "img_path": path, "width": int(width), "height": int(height),
                        "exif_orientation": True, "file": rel, "instances": []})
        if progress:
            progress(f"[{k + 1}/{len(files)}] {rel}: {width}x{height}")
    return records, skipped


def write_shard_list(out: str | Path, records: list[dict], skipped: list[tuple[str, str]], *,
                     shard: int, n_shards: int) -> None:
    atomic_pickle(out, {"format": LIST_FORMAT, "metainfo": {"classes": []}, "data_list": records,
                        "skipped": [list(s) for s in skipped], "shard": shard, "n_shards": n_shards})


def load_shard_list(path: str | Path) -> dict:
    data = load_pickle(path, kind="predict image list")
    if not isinstance(data, dict) or data.get("format") != LIST_FORMAT:
        raise InputError(f"{path}: not a predict image list ({LIST_FORMAT})")
    return data


# ------------------------------------------------------------------ collect


def _write_csv(path: str | Path, header: list[str], rows: Iterable[Sequence]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def collect(lists: Sequence[str | Path], scan: FolderScan, out_images: str | Path,
            out_skipped: str | Path) -> tuple[int, int]:
    """Shard lists -> ``images.csv`` (ImageID, File, Width, Height, Shard;
    folder order) and ``skipped.csv`` (File, Reason: the folder's skipped
    files and the unreadable images, path order). No image left is an
    :class:`InputError`. Returns (images, skipped)."""
    rows, skipped = [], list(scan.skipped)
    for path in lists:
        data = load_shard_list(path)
        rows += [(r["img_id"], r["file"], r["width"], r["height"], f"{data['shard']:02d}")
                 for r in data["data_list"]]
        skipped += [tuple(s) for s in data["skipped"]]
    rows.sort(key=lambda r: r[1])
    skipped.sort()
    listed = [r[1] for r in rows] + [s[0] for s in skipped if s[1].startswith("unreadable")]
    if sorted(listed) != scan.images:
        raise InputError(f"{', '.join(map(str, lists))}: the shard lists do not hold the folder's "
                         f"{len(scan.images)} images (they hold {len(listed)})")
    if not rows:
        what = "; ".join(f"{p}: {r}" for p, r in skipped[:3]) + (" ..." if len(skipped) > 3 else "")
        raise InputError(f"no image to predict: every file is skipped ({what})" if skipped
                         else "no image to predict: the folder is empty")
    _write_csv(out_skipped, SKIPPED_HEADER, skipped)
    try:
        _write_csv(out_images, IMAGES_HEADER, rows)
    except BaseException:
        Path(out_skipped).unlink(missing_ok=True)
        raise
    return len(rows), len(skipped)


def read_images_csv(path: str | Path) -> list[dict]:
    """Rows of ``images.csv``: ImageID, File, Width, Height (int), Shard."""
    from oidseg.errors import read_utf8_text

    rows = list(csv.DictReader(io.StringIO(read_utf8_text(path, "image list"), newline="")))
    if not rows or list(rows[0]) != IMAGES_HEADER:
        raise InputError(f"{path}: not a predict images.csv ({','.join(IMAGES_HEADER)})")
    for row in rows:
        row["Width"], row["Height"] = int(row["Width"]), int(row["Height"])
    return rows


# ------------------------------------------------------------------ COCO


def write_coco(predictions: str | Path, images_csv: str | Path, classes_json: str | Path,
               out: str | Path) -> tuple[int, int]:
    """The final Kaggle CSV -> COCO JSON (atomic)::

        {"info": {...}, "licenses": [],
         "images": [{"id", "file_name", "width", "height", "oid_image_id"}],
         "categories": [{"id", "name", "mid", "supercategory": "leaf"|"parent"}],
         "annotations": [{"id", "image_id", "category_id", "score", "iscrowd": 0,
                          "segmentation": {"size": [h, w], "counts": str},
                          "area", "bbox": [x, y, w, h]}]}

    Image ids are 1.. in ``images.csv`` order, category ids 1.. in
    ``classes.json`` order (the class-description CSV's). ``pycocotools.COCO``
    loads the file; ``COCO.loadRes(coco["annotations"])`` takes its
    annotations as results against a ground truth with the same image ids.
    Returns (images, annotations)."""
    from pycocotools import mask as mask_util

    from oidseg.kaggle import decode_mask, iter_shard, parse_score, rle_totals
    from oidseg.postprocess import load_classes_json

    classes = load_classes_json(classes_json)
    raw = json.loads(Path(classes_json).read_text(encoding="utf-8"))
    names = dict(raw["names"])
    leaf = set(raw["leaf_classes"])
    category = {mid: k + 1 for k, mid in enumerate(classes.classes)}
    listed = read_images_csv(images_csv)
    image_ids = {row["ImageID"]: k + 1 for k, row in enumerate(listed)}
    annotations: list[dict] = []
    seen: set[str] = set()
    for row in iter_shard(predictions):
        where = f"{predictions}: row {row.row} / {row.image_id}"
        if row.image_id not in image_ids:
            raise InputError(f"{where}: not in {images_csv}")
        if row.image_id in seen:
            raise InputError(f"{where}: duplicate ImageID")
        seen.add(row.image_id)
        parts = row.predictions.split()
        if len(parts) % 3:
            raise InputError(f"{where}: PredictionString has {len(parts)} fields, not triples")
        for k in range(0, len(parts), 3):
            label, score_text, encoded = parts[k:k + 3]
            if label not in category:
                raise InputError(f"{where}: unknown class {label!r}")
            try:
                score = parse_score(score_text)
                counts = decode_mask(encoded, row.height, row.width)
            except ValueError as exc:
                raise InputError(f"{where}: detection {k // 3 + 1}: {exc}") from None
            if int(rle_totals([counts])[0]) != row.height * row.width:
                raise InputError(f"{where}: detection {k // 3 + 1}: mask is not {row.height} x {row.width}")
            rle = {"size": [row.height, row.width], "counts": counts}
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_ids[row.image_id],
                "category_id": category[label], "score": score, "iscrowd": 0,
                "segmentation": {"size": [row.height, row.width], "counts": counts.decode("ascii")},
                "area": int(mask_util.area(rle)), "bbox": [float(v) for v in mask_util.toBbox(rle)],
            })
    missing = [i for i in image_ids if i not in seen]
    if missing:
        raise InputError(f"{predictions}: {len(missing)} images of {images_csv} have no row, e.g. {missing[0]}")
    coco = {
        "info": {"description": "oidseg predict: leaf and parent ensembles, hierarchy expansion, mask-NMS merge",
                 "classes": str(classes_json)},
        "licenses": [],
        "images": [{"id": k + 1, "file_name": row["File"], "width": row["Width"], "height": row["Height"],
                    "oid_image_id": row["ImageID"]} for k, row in enumerate(listed)],
        "categories": [{"id": category[mid], "name": names.get(mid, mid), "mid": mid,
                        "supercategory": "leaf" if mid in leaf else "parent"} for mid in classes.classes],
        "annotations": annotations,
    }
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(coco, separators=(",", ":")), encoding="utf-8")
    return len(listed), len(annotations)
