"""Kaggle instance-segmentation submission format (SPEC section 7).

A CSV shard has the header ``ImageID,ImageWidth,ImageHeight,PredictionString``
and one line per image. ``PredictionString`` is a space-joined list of
``LabelName Confidence EncodedMask`` triples (empty for an image without
predictions), where

- ``Confidence`` is written ``%.6f`` (never exponent notation);
- ``EncodedMask`` = base64( zlib.compress( COCO compressed-RLE ``counts`` of
  the ImageHeight x ImageWidth mask, level 9 ) ).

Rows are numbered like lines of the file: the header is row 1, the first
image row 2. Error messages read ``<file>: row <n> / <ImageID>: <problem>``.

Nothing here decodes a mask to pixels: the detection shards already hold
compressed-RLE ``counts`` bytes, which are zlib-compressed as they are, and
the size check of :func:`rle_totals` works on the RLE counts alone.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, Sequence

import numpy as np

from oidseg.errors import InputError, atomic_path, read_utf8_text
from oidseg.rle import inflate_bounded, parse_positive_int, parse_runs, rle_length_bound

HEADER = "ImageID,ImageWidth,ImageHeight,PredictionString"
#: an ImageID: ASCII letters, digits, ``_`` and ``-`` (the raw files' rule,
#: ``oidseg.raw``): no whitespace, so `` abc`` is never taken for ``abc``
IMAGE_ID = re.compile(r"[0-9A-Za-z_\-]+", re.ASCII)
COLUMNS = HEADER.split(",")
_BOM = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark before the header is allowed

#: smallest positive score that survives ``%.6f``; positive scores that would
#: print as ``0.000000`` are written as this value so that no later
#: ``score > 0`` threshold drops them (a defect of the original).
MIN_POSITIVE_SCORE = 1e-6


def valid_rle_string(counts: bytes) -> bool:
    """Cheap syntax check of a COCO compressed-RLE string: non-empty, only
    COCO's alphabet, last number complete. pycocotools' C parser reads past
    the end of a string cut inside a number, so nothing else reaches it."""
    return (
        bool(counts) and not (counts[-1] - 48) & 0x20 and not counts.translate(None, _RLE_ALPHABET)
    )


# --------------------------------------------------------------------------
# masks and scores


def encode_mask(counts: bytes) -> str:
    """COCO compressed-RLE counts -> Kaggle EncodedMask."""
    return base64.b64encode(zlib.compress(counts, 9)).decode("ascii")


def decode_mask(encoded: str | bytes, height: int | None = None, width: int | None = None) -> bytes:
    """Kaggle EncodedMask -> COCO compressed-RLE counts.

    With ``height`` and ``width``, decompression stops at the longest string
    an RLE of an ``height x width`` mask can take
    (:func:`oidseg.rle.rle_length_bound`), so a zlib bomb is rejected after
    that many bytes. Raises ``ValueError`` on bad base64 or zlib data and on
    a too long string.
    """
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"EncodedMask is not valid base64 ({exc})") from exc
    if height is not None and width is not None:
        return inflate_bounded(raw, rle_length_bound(height * width))
    try:
        return zlib.decompress(raw)
    except zlib.error as exc:
        raise ValueError(f"EncodedMask is not valid zlib data ({exc})") from exc


def format_scores(scores: np.ndarray) -> list[str]:
    """Scores -> ``%.6f`` strings; positive scores below 0.0000005 become
    ``0.000001`` instead of ``0.000000``. Scores must lie in [0, 1]."""
    s = np.asarray(scores, dtype=np.float64)
    s = np.where((s > 0) & (s < MIN_POSITIVE_SCORE), MIN_POSITIVE_SCORE, s)
    return ["%.6f" % v for v in s.tolist()]


_ASCII_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)


def parse_score(text: str) -> float:
    """A Confidence field -> float; ``ValueError`` unless a finite plain ASCII
    decimal (``float`` alone also takes Unicode digits and ``1_0``)."""
    if not _ASCII_DECIMAL.fullmatch(text):
        raise ValueError(f"confidence {text!r} is not a plain decimal number")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"confidence {text!r} is not finite")
    return value


def split_predictions(predictions: str) -> list[str]:
    """PredictionString -> flat token list (label, score, mask, label, ...).

    Raises ``ValueError`` when the token count is not a multiple of 3."""
    parts = predictions.split()
    if len(parts) % 3:
        raise ValueError(
            f"PredictionString has {len(parts)} fields, not a multiple of 3 "
            "(LabelName Confidence EncodedMask)"
        )
    return parts


_RLE_ALPHABET = bytes(range(48, 112))  # chr(48 + group), group in 0..63


def rle_area(rles: Sequence[dict]) -> np.ndarray:
    """pycocotools ``mask.area`` of a list of RLE dicts, as int64.

    pycocotools 2.0.11 fails on a list of 256 or more RLEs ("Python integer
    256 out of bounds for uint8"), so the list goes in chunks of 255.
    """
    from pycocotools import mask as mask_utils

    out = np.zeros(len(rles), dtype=np.int64)
    for lo in range(0, len(rles), 255):
        chunk = rles[lo : lo + 255]
        out[lo : lo + len(chunk)] = mask_utils.area(list(chunk))
    return out


def rle_totals(counts: Sequence[bytes]) -> np.ndarray:
    """Sum of the run lengths of each COCO compressed-RLE ``counts`` string.

    A valid RLE of an h x w mask sums to exactly h * w, so comparing the
    total to h * w checks the size without decoding any pixel. Returns an
    int64 array, -1 where a string is malformed or has a negative run (or an
    empty run after the first). :func:`oidseg.rle.parse_runs` parses every
    run exactly (pycocotools keeps runs as uint32, so a negative run wraps
    around and can give a total that is right modulo 2**32).
    """
    return parse_runs(counts)[0]


# --------------------------------------------------------------------------
# CSV shards


@dataclass(frozen=True)
class ShardRow:
    """One image line of a Kaggle CSV shard."""

    row: int  #: line number in the file (header = 1)
    image_id: str
    width: int
    height: int
    predictions: str


def _split_line(line: str) -> list[str]:
    """The fields of a row (all of them: a PredictionString never holds a
    comma, so a row with more than 4 fields is reported as such)."""
    if '"' in line:
        return next(csv.reader([line]))
    return line.split(",")


def _parse_size(path: Path, row: int, image_id: str, field: str, text: str) -> int:
    value = parse_positive_int(text)  # ASCII digits only ('²', '٣' are not numbers)
    if value is None:
        raise InputError(
            f"{path}: row {row} / {image_id}: {field} {text!r} is not a positive integer "
            "(ASCII digits)"
        )
    return value


def iter_shard(path: str | Path) -> Iterator[ShardRow]:
    """Stream the rows of a Kaggle CSV shard, checking header and fields."""
    path = Path(path)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read CSV ({exc})") from exc
    with fh:
        offset = 0
        for row, raw in enumerate(fh, start=1):
            start, offset = offset, offset + len(raw)
            if row == 1 and raw.startswith(_BOM):
                raw, start = raw[len(_BOM) :], start + len(_BOM)
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"{path}: row {row}: not UTF-8 text: byte {raw[exc.start]:#04x} at byte "
                    f"offset {start + exc.start} of the file"
                ) from None
            if row == 1:
                if line != HEADER:
                    raise InputError(
                        f"{path}: row 1: header is {line[:80]!r}, expected {HEADER!r}"
                    )
                continue
            if not line:  # blank lines (e.g. a trailing one) are skipped
                continue
            try:
                fields = _split_line(line)
            except csv.Error as exc:
                raise InputError(f"{path}: row {row}: bad CSV quoting ({exc})") from None
            image_id = fields[0]
            if len(fields) != 4:
                raise InputError(
                    f"{path}: row {row} / {image_id}: {len(fields)} fields, expected 4 "
                    "(ImageID,ImageWidth,ImageHeight,PredictionString)"
                )
            if not image_id:
                raise InputError(f"{path}: row {row}: empty ImageID")
            yield ShardRow(
                row=row,
                image_id=image_id,
                width=_parse_size(path, row, image_id, "ImageWidth", fields[1]),
                height=_parse_size(path, row, image_id, "ImageHeight", fields[2]),
                predictions=fields[3],
            )
        if offset == 0:
            raise InputError(f"{path}: row 1: file is empty, expected the header {HEADER!r}")


class ShardWriter:
    """Write a Kaggle CSV atomically: nothing appears at ``path`` unless the
    ``with`` block finishes without an exception."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._ctx = atomic_path(self.path)
        self._fh: IO[str] | None = None
        self.rows = 0

    def __enter__(self) -> "ShardWriter":
        tmp = self._ctx.__enter__()
        self._fh = open(tmp, "w", encoding="utf-8", newline="\n", buffering=1 << 20)
        self._fh.write(HEADER + "\n")
        return self

    def write(self, image_id: str, width: int, height: int, predictions: str) -> None:
        assert self._fh is not None
        self._fh.write(f"{image_id},{width},{height},{predictions}\n")
        self.rows += 1

    def __exit__(self, exc_type, exc, tb) -> bool:
        assert self._fh is not None
        try:
            self._fh.close()  # flushes the buffer: a full disk may show only here
        except OSError as closing:
            if exc is None:  # the temp file is removed and the error names ``path``
                exc_type, exc, tb = type(closing), closing, closing.__traceback__
        return bool(self._ctx.__exit__(exc_type, exc, tb))


def read_image_list(path: str | Path) -> list[str]:
    """ImageIDs of a CSV with an ``ImageID`` column (Kaggle's sample
    submission or ``heldout_val.csv``), in file order; duplicates, empty
    IDs and IDs that are not :data:`IMAGE_ID` (a space, say) are errors.
    The validator and the scorer read their image lists with this."""
    path = Path(path)
    # bytes that are not UTF-8 -> InputError with their offset; a BOM is dropped
    with io.StringIO(read_utf8_text(path, "image list"), newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header or "ImageID" not in header:
            raise InputError(f"{path}: row 1: no ImageID column in header {header!r}")
        col = header.index("ImageID")
        ids: list[str] = []
        seen: dict[str, int] = {}
        for row, fields in enumerate(reader, start=2):
            if not fields:
                continue
            image_id = fields[col] if col < len(fields) else ""
            if not image_id:
                raise InputError(f"{path}: row {row}: empty ImageID")
            if not IMAGE_ID.fullmatch(image_id):
                raise InputError(
                    f"{path}: row {row}: ImageID {image_id!r} is not an ImageID "
                    "(ASCII letters, digits, '_' and '-' only; no spaces)"
                )
            if image_id in seen:
                raise InputError(
                    f"{path}: row {row} / {image_id}: duplicate ImageID "
                    f"(first at row {seen[image_id]})"
                )
            seen[image_id] = row
            ids.append(image_id)
    if not ids:
        raise InputError(f"{path}: image list is empty")
    return ids
