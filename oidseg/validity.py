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
- every row has 4 fields (CSV quoting allowed; a row with more says how
  many), an ImageID of letters, digits, ``_`` and ``-`` (no whitespace)
  seen only once, and ImageWidth / ImageHeight made of ASCII digits,
  positive, with ImageWidth x ImageHeight <= :data:`oidseg.rle.MAX_IMAGE_PIXELS`;
- the ImageIDs are exactly those of the image list (:class:`ImageList`: the
  validator's ``--image-list``; the scorer's ``--image-ids``, or else the
  images of the ground-truth files): an unlisted row and a listed image
  without a row are errors;
- when the true image sizes are known (the validator's ``--image-sizes``;
  the scorer's ground-truth image sizes) the declared size must be the true
  one (the scorer's ``--resize-masks`` lifts this for the scorer only);
- a PredictionString is ``LabelName Confidence EncodedMask`` triples: the
  label one of the run's classes, the confidence an ASCII decimal number in
  [0, 1], the mask base64 of zlib data (inflated only up to the longest RLE
  string of an ImageHeight x ImageWidth mask) of a COCO compressed RLE with
  no negative run whose runs sum to ImageHeight x ImageWidth.

Memory: the masks of a row are checked one after the other, never the whole
row at once: masks whose RLE is shorter than :data:`oidseg.rle.CHUNK_CHARS`
characters in batches of about that many characters, a longer one inflated
and parsed piece by piece (:func:`oidseg.rle.inflate_chunks`,
:class:`oidseg.rle.RunCounter`), so checking costs
about 60 x CHUNK_CHARS bytes (15 MB) whatever the declared size
(``bench/bench_metric_memory.py``). The scorer keeps each mask's zlib data
(``keep_masks=True``, the size of the input) and inflates it again, whole,
only to measure and match it (``oidseg.metric``).

Messages read ``<file>: row <n> / <ImageID>: <problem>``.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import AbstractSet, Iterator, Sequence

import numpy as np

from oidseg.errors import InputError
from oidseg.kaggle import IMAGE_ID, ShardRow, iter_shard, read_image_list
from oidseg.rle import (
    CHUNK_CHARS, MAX_IMAGE_PIXELS, OK, PROBLEMS, RunCounter, inflate_chunks, parse_runs,
    rle_length_bound,
)

#: a Confidence: ASCII decimal notation (``float`` alone would also take
#: ``'٠.٥'``, ``'1_0'``, ``' 0.5'``, ``'nan'``)
_NUMBER = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_CONFIDENCE = re.compile(_NUMBER, re.ASCII)
_CONFIDENCES = re.compile(rf"{_NUMBER}(?: {_NUMBER})*", re.ASCII)  # space-joined


class PredictionError(ValueError):
    """A bad PredictionString; the message names the prediction."""


@dataclass(frozen=True)
class Predictions:
    """A checked PredictionString. With ``keep_masks=True`` also each mask's
    zlib data (as submitted, base64-decoded) and RLE length."""

    labels: list[str]
    scores: np.ndarray  #: float64
    masks: list[bytes] = field(default_factory=list)
    lengths: np.ndarray | None = None  #: int64, characters of each RLE string

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class ImageList:
    """The images a submission must have, each exactly once.

    ``source`` names the list in messages (a file, or a description such as
    the ground truth); ``rows`` gives each ImageID's row in that file."""

    ids: Sequence[str]
    source: str
    rows: dict[str, int] | None = None

    @classmethod
    def read(cls, path: str | Path) -> "ImageList":
        """A CSV with an ``ImageID`` column (:func:`oidseg.kaggle.read_image_list`)."""
        ids = read_image_list(path)
        return cls(ids=ids, source=str(path), rows={i: r for r, i in enumerate(ids, start=2)})

    def where(self, image_id: str) -> str:
        if self.rows is not None and image_id in self.rows:
            return f"row {self.rows[image_id]} of {self.source}"
        return f"in the image list {self.source}"


def where(path: str | Path, row: ShardRow) -> str:
    return f"{path}: row {row.row} / {row.image_id}"


def iter_submission(
    path: str | Path,
    sizes: dict[str, tuple[int, int]] | None = None,
    images: ImageList | None = None,
) -> Iterator[ShardRow]:
    """Rows of a submission CSV, with the file-level checks of this module.

    ``sizes`` (ImageID -> (width, height)), when given, holds the true image
    sizes: a row of a listed image must declare exactly that size.
    ``images``, when given, is the image list: every row's ImageID must be
    in it, and once the rows are exhausted every listed image must have
    appeared (the missing ones are reported then).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: submission file is missing")
    listed = None if images is None else set(images.ids)
    seen: dict[str, int] = {}
    for row in iter_shard(path):
        here = where(path, row)
        if not IMAGE_ID.fullmatch(row.image_id):
            raise InputError(
                f"{path}: row {row.row}: ImageID {row.image_id!r} is not an ImageID "
                "(ASCII letters, digits, '_' and '-' only; no spaces)"
            )
        first = seen.setdefault(row.image_id, row.row)
        if first != row.row:
            raise InputError(f"{here}: duplicate ImageID (first at row {first})")
        if listed is not None and row.image_id not in listed:
            raise InputError(f"{here}: ImageID not in the image list {images.source}")
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
    if listed is not None and len(seen) != len(listed):
        missing = next(i for i in images.ids if i not in seen)
        raise InputError(
            f"{path}: ImageID {missing} ({images.where(missing)}) is missing; "
            f"{len(listed) - len(seen)} listed images are missing"
        )


class _MaskChecker:
    """The masks of one PredictionString, in order, in bounded memory."""

    def __init__(self, labels: list[str], height: int, width: int, keep: bool):
        self.labels, self.height, self.width = labels, height, width
        self.expected = height * width
        self.bound = rle_length_bound(self.expected)
        self.keep = keep
        self.masks: list[bytes] = []
        self.lengths = np.zeros(len(labels), dtype=np.int64)
        self._batch: list[bytes] = []
        self._batch_start = 0
        self._batch_chars = 0

    def fail(self, t: int, problem: str) -> PredictionError:
        return PredictionError(f"prediction {t + 1} ({self.labels[t]}): {problem}")

    def size_problem(self, total: int) -> str:
        return (f"mask covers {total} pixels, expected ImageHeight x ImageWidth = "
                f"{self.height} x {self.width} = {self.expected}")

    def check(self, t: int, encoded: str) -> None:
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            self.flush()
            raise self.fail(t, f"EncodedMask is not valid base64 ({exc})") from None
        if self.keep:
            self.masks.append(data)
        inflater = zlib.decompressobj()
        try:
            counts = inflater.decompress(data, CHUNK_CHARS)
        except zlib.error as exc:
            self.flush()
            raise self.fail(t, f"EncodedMask is not valid zlib data ({exc})") from None
        if inflater.eof and len(counts) <= self.bound:  # short: checked with the batch
            if self._batch_chars + len(counts) > CHUNK_CHARS:
                self.flush()
            if not self._batch:
                self._batch_start = t
            self._batch.append(counts)
            self._batch_chars += len(counts)
            return
        del counts, inflater
        self.flush()  # long (or bad): inflated again, piece by piece, never whole
        counter = RunCounter(self.expected)
        length = 0
        try:  # to the end of the stream even past a bad run: zlib errors come first
            for piece in inflate_chunks(data, self.bound):
                length += len(piece)
                counter.feed(piece)
        except ValueError as exc:
            raise self.fail(t, str(exc)) from None
        counter.finish()
        if counter.problem != OK:
            raise self.fail(t, PROBLEMS[counter.problem])
        if counter.too_long:
            raise self.fail(t, f"mask covers more than {self.expected} pixels (a run of "
                               f"{counter.too_long}), expected ImageHeight x ImageWidth = "
                               f"{self.height} x {self.width}")
        if counter.total != self.expected:
            raise self.fail(t, self.size_problem(counter.total))
        self.lengths[t] = length

    def flush(self) -> None:
        """Check the batch of short masks."""
        if not self._batch:
            return
        batch, start = self._batch, self._batch_start
        self._batch, self._batch_chars = [], 0
        totals, problems = parse_runs(batch)
        bad = np.flatnonzero((problems != OK) | (totals != self.expected))
        if bad.size:
            k = int(bad[0])
            if problems[k] != OK:
                raise self.fail(start + k, PROBLEMS[int(problems[k])])
            raise self.fail(start + k, self.size_problem(int(totals[k])))
        self.lengths[start:start + len(batch)] = [len(c) for c in batch]


def parse_predictions(
    text: str, width: int, height: int, classes: AbstractSet[str], *, keep_masks: bool = False
) -> Predictions:
    """Check one PredictionString of an ImageHeight x ImageWidth image;
    :class:`PredictionError` names the first bad prediction (labels and
    confidences are checked before the masks). ``keep_masks``: also return
    the masks' zlib data and RLE lengths (the scorer)."""
    parts = text.split()
    if len(parts) % 3:
        raise PredictionError(
            f"PredictionString has {len(parts)} fields, not a multiple of 3 "
            "(LabelName Confidence EncodedMask)"
        )
    labels, score_texts, encoded = parts[0::3], parts[1::3], parts[2::3]
    del parts
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
    checker = _MaskChecker(labels, height, width, keep_masks)
    for t, mask in enumerate(encoded):
        checker.check(t, mask)
    checker.flush()
    if not keep_masks:
        return Predictions(labels=labels, scores=scores)
    return Predictions(labels=labels, scores=scores, masks=checker.masks, lengths=checker.lengths)


def row_predictions(
    path: str | Path, row: ShardRow, classes: AbstractSet[str], *, keep_masks: bool = False
) -> Predictions:
    """:func:`parse_predictions` of a row; :class:`InputError` names the file,
    row and ImageID."""
    try:
        return parse_predictions(row.predictions, row.width, row.height, classes,
                                 keep_masks=keep_masks)
    except PredictionError as exc:
        raise InputError(f"{where(path, row)}: {exc}") from None
