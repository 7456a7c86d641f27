"""Readers for the raw Open Images challenge files (SPEC section 2), with validation.

Every reader returns a typed pandas frame or raises :class:`InputError` whose
message names the file, the row (1-based data row; the header is line 1, so
data row ``n`` is line ``n + 1``) or the ImageID, and the problem.

Checked everywhere: the file exists and is not empty, the required columns
are present (a renamed column is reported by its expected name), identifiers
are non-empty, numbers parse, MIDs are known classes (when a class set is
given), normalised boxes lie in [0, 1] with min <= max, and flags are 0/1.

Image sizes come from the JPEG header (``read_image_size``) or from a
precomputed table (``SizeTable``); both satisfy :data:`SizeLookup`, so the
annotation builder (and its benchmark) can be fed synthetic sizes.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Collection, Sequence

import numpy as np
import pandas as pd

from oidseg.errors import InputError

MASK_COLUMNS = (
    "MaskPath", "ImageID", "LabelName", "BoxID",
    "BoxXMin", "BoxXMax", "BoxYMin", "BoxYMax", "PredictedIoU", "Clicks",
)
BBOX_COLUMNS = ("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax", "IsGroupOf")
LABEL_COLUMNS = ("ImageID", "LabelName", "Confidence")
TEST_LIST_COLUMNS = ("ImageID",)

#: columns of the masks CSV that the workflow uses (the others are only checked present)
MASK_USED_COLUMNS = ("MaskPath", "ImageID", "LabelName", "BoxID",
                     "BoxXMin", "BoxXMax", "BoxYMin", "BoxYMax")

#: slack on the [0, 1] range of normalised coordinates (float rounding in CSVs)
BOX_TOLERANCE = 1e-6

_ID_PATTERN = re.compile(r"^[0-9A-Za-z_\-]+$")
_PNG_NAME = re.compile(r"^[^/\\]+\.png$")

#: image-size lookup: ImageIDs -> (widths, heights) as int arrays
SizeLookup = Callable[[Sequence[str]], "tuple[np.ndarray, np.ndarray]"]


# --------------------------------------------------------------------------- helpers


def _row_error(path: Path, frame: pd.DataFrame, bad: np.ndarray, problem: str,
               column: str | None = None) -> InputError:
    """InputError for the first True position of ``bad`` (and the count)."""
    positions = np.flatnonzero(bad)
    first = int(positions[0])
    image = frame["ImageID"].iloc[first] if "ImageID" in frame.columns else None
    where = f"row {first + 1}" + (f" / {image}" if image is not None else "")
    raw_value = frame[column].iloc[first] if column else None
    raw_value = raw_value.item() if isinstance(raw_value, np.generic) else raw_value
    value = f" ({column}={raw_value!r})" if column else ""
    more = f" [{len(positions)} bad rows in all]" if len(positions) > 1 else ""
    return InputError(f"{path}: {where}: {problem}{value}{more}")


def read_csv_checked(path: str | Path, required: Sequence[str], *,
                     usecols: Sequence[str] | None = None,
                     numeric: Sequence[str] = (), allow_no_rows: bool = False,
                     kind: str = "CSV") -> pd.DataFrame:
    """Read a CSV with header, check the required columns and parse numbers.

    String columns are read as strings (never as numbers: ImageIDs such as
    ``0000000000000001`` keep their zeros). Only ``usecols`` (default: all of
    ``required``) are kept in the returned frame.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {kind} file is missing")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: {kind} file is empty")
    try:
        header = pd.read_csv(path, nrows=0)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot parse {kind} header ({exc})") from exc
    present = [str(c).strip() for c in header.columns]
    for column in required:
        if column not in present:
            raise InputError(
                f"{path}: required column {column!r} is missing "
                f"(found columns: {', '.join(present)})"
            )
    keep = list(usecols if usecols is not None else required)
    try:
        try:  # fast path: numbers parsed by the C reader
            frame = pd.read_csv(path, usecols=keep,
                                dtype={c: (np.float64 if c in numeric else str) for c in keep},
                                keep_default_na=False, na_values={c: [""] for c in numeric})
        except ValueError:  # a non-numeric value: parse as text to find its row
            frame = pd.read_csv(path, usecols=keep, dtype=str, keep_default_na=False)
            for column in numeric:
                frame[column] = pd.to_numeric(frame[column].str.strip(), errors="coerce")
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot parse {kind} ({exc})") from exc
    frame = frame[keep]
    if len(frame) == 0 and not allow_no_rows:
        raise InputError(f"{path}: {kind} file has a header but no rows")
    for column in numeric:
        bad = frame[column].isna().to_numpy()
        if bad.any():
            raise _row_error(path, frame, bad, f"missing or non-numeric {column}")
    return frame


def check_ids(path: Path, frame: pd.DataFrame, column: str = "ImageID") -> None:
    ids = frame[column].astype(str)
    bad = ~ids.str.match(_ID_PATTERN).to_numpy(dtype=bool)
    if bad.any():
        raise _row_error(path, frame, bad, f"empty or malformed {column}", column)


def check_known_mids(path: Path, frame: pd.DataFrame, known: Collection[str] | None,
                     column: str = "LabelName") -> None:
    if known is None:
        return
    bad = ~frame[column].isin(pd.Index(list(known))).to_numpy()
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise _row_error(path, frame, bad,
                         f"unknown MID {frame[column].iloc[first]!r} (not a class of the hierarchy)")


def check_boxes(path: Path, frame: pd.DataFrame, xmin: str, xmax: str,
                ymin: str, ymax: str) -> None:
    lo, hi = -BOX_TOLERANCE, 1.0 + BOX_TOLERANCE
    for column in (xmin, xmax, ymin, ymax):
        values = frame[column].to_numpy()
        bad = (values < lo) | (values > hi)
        if bad.any():
            raise _row_error(path, frame, bad, f"box coordinate {column} outside [0, 1]", column)
    for low, high in ((xmin, xmax), (ymin, ymax)):
        bad = frame[low].to_numpy() > frame[high].to_numpy()
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise _row_error(
                path, frame, bad,
                f"box {low}={frame[low].iloc[first]} > {high}={frame[high].iloc[first]}",
            )


def check_flags(path: Path, frame: pd.DataFrame, column: str) -> None:
    values = frame[column].to_numpy()
    bad = (values != 0) & (values != 1)
    if bad.any():
        raise _row_error(path, frame, bad, f"{column} must be 0 or 1", column)


def check_unique(path: Path, frame: pd.DataFrame, column: str, what: str) -> None:
    bad = frame[column].duplicated().to_numpy()
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise _row_error(path, frame, bad, f"duplicate {what} {frame[column].iloc[first]!r}")


# --------------------------------------------------------------------------- readers


def read_masks_csv(path: str | Path, known_mids: Collection[str] | None = None, *,
                   all_columns: bool = False) -> pd.DataFrame:
    """Masks CSV (train, validation or V5 test): columns :data:`MASK_COLUMNS`.

    Returns :data:`MASK_USED_COLUMNS` (all columns with ``all_columns``); box
    columns are float64, the others strings.
    """
    path = Path(path)
    usecols = MASK_COLUMNS if all_columns else MASK_USED_COLUMNS
    numeric = ["BoxXMin", "BoxXMax", "BoxYMin", "BoxYMax"]
    if all_columns:
        numeric.append("PredictedIoU")
    frame = read_csv_checked(path, MASK_COLUMNS, usecols=usecols, numeric=numeric,
                             kind="masks CSV")
    check_ids(path, frame)
    check_known_mids(path, frame, known_mids)
    check_boxes(path, frame, "BoxXMin", "BoxXMax", "BoxYMin", "BoxYMax")
    bad = ~frame["MaskPath"].str.match(_PNG_NAME).to_numpy(dtype=bool)
    if bad.any():
        raise _row_error(path, frame, bad, "MaskPath must be a bare '*.png' file name",
                         "MaskPath")
    check_unique(path, frame, "MaskPath", "MaskPath")
    return frame


def read_bbox_csv(path: str | Path, known_mids: Collection[str] | None = None) -> pd.DataFrame:
    """Box CSV: ``ImageID,LabelName,XMin,XMax,YMin,YMax,IsGroupOf`` (IsGroupOf int8)."""
    path = Path(path)
    frame = read_csv_checked(path, BBOX_COLUMNS,
                             numeric=("XMin", "XMax", "YMin", "YMax", "IsGroupOf"),
                             kind="bbox CSV")
    check_ids(path, frame)
    check_known_mids(path, frame, known_mids)
    check_boxes(path, frame, "XMin", "XMax", "YMin", "YMax")
    check_flags(path, frame, "IsGroupOf")
    frame["IsGroupOf"] = frame["IsGroupOf"].astype(np.int8)
    return frame


def read_labels_csv(path: str | Path, known_mids: Collection[str] | None = None) -> pd.DataFrame:
    """Image-level labels CSV: ``ImageID,LabelName,Confidence`` (Confidence int8, 0/1)."""
    path = Path(path)
    frame = read_csv_checked(path, LABEL_COLUMNS, numeric=("Confidence",),
                             kind="labels CSV")
    check_ids(path, frame)
    check_known_mids(path, frame, known_mids)
    check_flags(path, frame, "Confidence")
    frame["Confidence"] = frame["Confidence"].astype(np.int8)
    return frame


def read_image_list(path: str | Path, *, allow_no_rows: bool = False) -> pd.DataFrame:
    """Test list (Kaggle sample submission) or held-out list: column ``ImageID``,
    other columns ignored; IDs must be unique. File order is kept."""
    path = Path(path)
    frame = read_csv_checked(path, TEST_LIST_COLUMNS, allow_no_rows=allow_no_rows,
                             kind="image list")
    check_ids(path, frame)
    check_unique(path, frame, "ImageID", "ImageID")
    return frame


# --------------------------------------------------------------------------- image sizes


def read_image_size(path: str | Path, image_id: str | None = None) -> tuple[int, int]:
    """(width, height) from an image's header (the pixels are not decoded)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    label = f" / {image_id}" if image_id else ""
    try:
        with Image.open(path) as img:
            width, height = img.size
    except FileNotFoundError as exc:
        raise InputError(f"{path}{label}: image is missing") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{path}{label}: image is unreadable ({exc})") from exc
    if width <= 0 or height <= 0:
        raise InputError(f"{path}{label}: image has size {width}x{height}")
    return int(width), int(height)


class JpegSizeReader:
    """:data:`SizeLookup` reading ``{image_dir}/{ImageID}.jpg`` headers (threaded)."""

    def __init__(self, image_dir: str | Path, *, threads: int = 8, suffix: str = ".jpg"):
        self.image_dir = Path(image_dir)
        self.threads = threads
        self.suffix = suffix

    def __call__(self, image_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        paths = [(self.image_dir / f"{i}{self.suffix}", i) for i in image_ids]
        if len(paths) > 64 and self.threads > 1:
            with ThreadPoolExecutor(self.threads) as pool:
                sizes = list(pool.map(lambda p: read_image_size(*p), paths))
        else:
            sizes = [read_image_size(*p) for p in paths]
        array = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
        return array[:, 0], array[:, 1]


class SizeTable:
    """:data:`SizeLookup` backed by a table ``ImageID -> width, height``."""

    def __init__(self, image_ids: Sequence[str], widths: np.ndarray, heights: np.ndarray,
                 *, source: str = "size table"):
        self.index = pd.Index(np.asarray(image_ids, dtype=object))
        self.widths = np.asarray(widths, dtype=np.int64)
        self.heights = np.asarray(heights, dtype=np.int64)
        self.source = source

    def __call__(self, image_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        pos = self.index.get_indexer(pd.Index(np.asarray(image_ids, dtype=object)))
        if (pos < 0).any():
            missing = np.asarray(image_ids, dtype=object)[pos < 0][0]
            raise InputError(f"{self.source}: no size for image {missing}")
        return self.widths[pos], self.heights[pos]


def read_sizes_csv(path: str | Path) -> SizeTable:
    """Precomputed image sizes: CSV ``ImageID,ImageWidth,ImageHeight`` (positive ints)."""
    path = Path(path)
    frame = read_csv_checked(path, ("ImageID", "ImageWidth", "ImageHeight"),
                             numeric=("ImageWidth", "ImageHeight"), kind="image sizes CSV")
    check_ids(path, frame)
    check_unique(path, frame, "ImageID", "ImageID")
    for column in ("ImageWidth", "ImageHeight"):
        values = frame[column].to_numpy()
        bad = (values < 1) | (values != np.round(values))
        if bad.any():
            raise _row_error(path, frame, bad, f"{column} must be a positive integer", column)
    return SizeTable(frame["ImageID"].to_numpy(dtype=object),
                     frame["ImageWidth"].to_numpy().astype(np.int64),
                     frame["ImageHeight"].to_numpy().astype(np.int64), source=str(path))
