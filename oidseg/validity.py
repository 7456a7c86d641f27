"""What makes a Kaggle submission valid: one module for the validator and the scorer.

``oidseg.submission.validate_submission`` (the ``validate_submission`` rule)
and ``oidseg.metric.read_submission`` (``scripts/evaluate.py``) read a
submission through :func:`iter_submission` and check PredictionStrings with
:func:`parse_predictions`, so they accept the same files and name a bad row
the same way:

- a UTF-8 byte-order mark before the header is allowed; the header must be
  exactly ``ImageID,ImageWidth,ImageHeight,PredictionString``;
- rows are numbered like lines of the file (the header is row 1); blank
  lines (such as a trailing one) are skipped but keep their numbers;
- bytes that are not UTF-8 are reported with their row and byte offset;
- every row has 4 fields (CSV quoting allowed), a non-empty ImageID seen
  only once, and ImageWidth / ImageHeight made of ASCII digits, positive,
  with ImageWidth x ImageHeight <= :data:`oidseg.rle.MAX_IMAGE_PIXELS`;
  when the true image sizes are known (the validator's ``--image-sizes``)
  the declared size must be the true one;
- a PredictionString is ``LabelName Confidence EncodedMask`` triples: the
  label one of the run's classes, the confidence an ASCII decimal number in
  [0, 1], the mask base64 of zlib data (inflated only up to the longest RLE
  string of an ImageHeight x ImageWidth mask) of a COCO compressed RLE with
  no negative run whose runs sum to ImageHeight x ImageWidth.

Messages read ``<file>: row <n> / <ImageID>: <problem>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import AbstractSet, Iterator

import numpy as np

from oidseg.errors import InputError
from oidseg.kaggle import ShardRow, decode_mask, iter_shard
from oidseg.rle import MAX_IMAGE_PIXELS, OK, PROBLEMS, parse_runs

#: a Confidence: ASCII decimal notation (``float`` alone would also take
#: ``'٠.٥'``, ``'1_0'``, ``' 0.5'``, ``'nan'``)
_NUMBER = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_CONFIDENCE = re.compile(_NUMBER, re.ASCII)
_CONFIDENCES = re.compile(rf"{_NUMBER}(?: {_NUMBER})*", re.ASCII)  # space-joined


class PredictionError(ValueError):
    """A bad PredictionString; the message names the prediction."""


@dataclass(frozen=True)
class Predictions:
    """A checked PredictionString."""

    labels: list[str]
    scores: np.ndarray  #: float64
    counts: list[bytes]  #: COCO compressed-RLE strings of ImageHeight x ImageWidth masks

    def __len__(self) -> int:
        return len(self.labels)


def where(path: str | Path, row: ShardRow) -> str:
    return f"{path}: row {row.row} / {row.image_id}"


def iter_submission(
    path: str | Path, sizes: dict[str, tuple[int, int]] | None = None
) -> Iterator[ShardRow]:
    """Rows of a submission CSV, with the file-level checks of this module.

    ``sizes`` (ImageID -> (width, height)), when given, holds the true image
    sizes: a row of a listed image must declare exactly that size.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: submission file is missing")
    seen: dict[str, int] = {}
    for row in iter_shard(path):
        here = where(path, row)
        first = seen.setdefault(row.image_id, row.row)
        if first != row.row:
            raise InputError(f"{here}: duplicate ImageID (first at row {first})")
        if row.width * row.height > MAX_IMAGE_PIXELS:
            raise InputError(
                f"{here}: ImageWidth x ImageHeight = {row.width} x {row.height} is more than "
                f"{MAX_IMAGE_PIXELS} pixels"
            )
        if sizes is not None and row.image_id in sizes:
            true_w, true_h = sizes[row.image_id]
            if (row.width, row.height) != (true_w, true_h):
                raise InputError(
                    f"{here}: declared size ImageWidth x ImageHeight = {row.width} x "
                    f"{row.height}, but the image is {true_w} x {true_h}"
                )
        yield row


def parse_predictions(
    text: str, width: int, height: int, classes: AbstractSet[str]
) -> Predictions:
    """Check one PredictionString of an ImageHeight x ImageWidth image;
    :class:`PredictionError` names the first bad prediction."""
    parts = text.split()
    if len(parts) % 3:
        raise PredictionError(
            f"PredictionString has {len(parts)} fields, not a multiple of 3 "
            "(LabelName Confidence EncodedMask)"
        )
    labels, score_texts, encoded = parts[0::3], parts[1::3], parts[2::3]
    if not classes.issuperset(labels):
        t = next(t for t, label in enumerate(labels) if label not in classes)
        raise PredictionError(
            f"prediction {t + 1} ({labels[t]}): unknown class {labels[t]!r} (LabelName)"
        )
    if labels and not _CONFIDENCES.fullmatch(" ".join(score_texts)):
        t = next(t for t, score in enumerate(score_texts) if not _CONFIDENCE.fullmatch(score))
        raise PredictionError(
            f"prediction {t + 1} ({labels[t]}): Confidence {score_texts[t]!r} is not a number "
            "(ASCII decimal notation)"
        )
    scores = np.asarray(score_texts, dtype=np.float64)
    outside = np.flatnonzero(~((scores >= 0.0) & (scores <= 1.0)))
    if outside.size:
        t = int(outside[0])
        raise PredictionError(
            f"prediction {t + 1} ({labels[t]}): Confidence {score_texts[t]} outside [0, 1]"
        )
    counts: list[bytes] = []
    for t, text in enumerate(encoded):
        try:
            counts.append(decode_mask(text, height, width))
        except ValueError as exc:
            raise PredictionError(f"prediction {t + 1} ({labels[t]}): {exc}") from None
    if counts:
        totals, problems = parse_runs(counts)
        expected = width * height
        bad = np.flatnonzero((problems != OK) | (totals != expected))
        if bad.size:
            t = int(bad[0])
            name = f"prediction {t + 1} ({labels[t]})"
            if problems[t] != OK:
                raise PredictionError(f"{name}: {PROBLEMS[int(problems[t])]}")
            raise PredictionError(
                f"{name}: mask covers {totals[t]} pixels, expected "
                f"ImageHeight x ImageWidth = {height} x {width} = {expected}"
            )
    return Predictions(labels=labels, scores=scores, counts=counts)


def row_predictions(path: str | Path, row: ShardRow, classes: AbstractSet[str]) -> Predictions:
    """:func:`parse_predictions` of a row; :class:`InputError` names the file,
    row and ImageID."""
    try:
        return parse_predictions(row.predictions, row.width, row.height, classes)
    except PredictionError as exc:
        raise InputError(f"{where(path, row)}: {exc}") from None
