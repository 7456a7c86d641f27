"""Check a Kaggle instance-segmentation submission before it is uploaded.

Checks, in file order, stopping at the first bad row (named by its row
number, the header being row 1, and its ImageID):

- the header is exactly ``ImageID,ImageWidth,ImageHeight,PredictionString``;
- every row has 4 fields, a listed ImageID not seen before, and positive
  integer ImageWidth / ImageHeight;
- PredictionString is a list of ``LabelName Confidence EncodedMask`` triples;
  every LabelName is one of the run's classes (all classes of classes.json);
  every Confidence is a finite number in [0, 1];
- every EncodedMask is valid base64 of valid zlib data of a COCO
  compressed RLE whose run lengths sum to ImageHeight x ImageWidth;
- at the end, every image of the image list has appeared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from oidseg.errors import InputError
from oidseg.kaggle import HEADER, decode_mask, read_image_list, rle_totals


@dataclass(frozen=True)
class SubmissionSummary:
    images: int
    images_with_predictions: int
    predictions: int
    labels_used: int

    def text(self, submission: str | Path) -> str:
        return (
            f"submission: {submission}\n"
            f"images: {self.images}\n"
            f"images_with_predictions: {self.images_with_predictions}\n"
            f"predictions: {self.predictions}\n"
            f"labels_used: {self.labels_used}\n"
        )


def check_predictions(predictions: str, width: int, height: int, classes: set[str]) -> str | None:
    """Problem with one PredictionString, or None when it is valid."""
    parts = predictions.split()
    if len(parts) % 3:
        return (
            f"PredictionString has {len(parts)} fields, not a multiple of 3 "
            "(LabelName Confidence EncodedMask)"
        )
    counts: list[bytes] = []
    for t in range(len(parts) // 3):
        label, score, encoded = parts[3 * t], parts[3 * t + 1], parts[3 * t + 2]
        where = f"prediction {t + 1} ({label})"
        if label not in classes:
            return f"{where}: unknown LabelName {label!r}"
        try:
            value = float(score)
        except ValueError:
            return f"{where}: Confidence {score!r} is not a number"
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            return f"{where}: Confidence {score} outside [0, 1]"
        try:
            counts.append(decode_mask(encoded))
        except ValueError as exc:
            return f"{where}: {exc}"
    if counts:
        totals = rle_totals(counts)
        expected = width * height
        for t, total in enumerate(totals.tolist()):
            if total != expected:
                label = parts[3 * t]
                if total < 0:
                    return f"prediction {t + 1} ({label}): EncodedMask is not a valid COCO RLE"
                return (
                    f"prediction {t + 1} ({label}): mask covers {total} pixels, "
                    f"expected ImageHeight x ImageWidth = {height} x {width} = {expected}"
                )
    return None


def validate_submission(
    submission: str | Path, image_list: str | Path, classes: set[str]
) -> SubmissionSummary:
    """Raise :class:`InputError` at the first problem; return a summary."""
    submission = Path(submission)
    ids = read_image_list(image_list)
    list_row = {image_id: row for row, image_id in enumerate(ids, start=2)}
    seen: dict[str, int] = {}
    with_predictions = predictions = 0
    labels_used: set[str] = set()
    try:
        fh = open(submission, encoding="utf-8", newline="")
    except OSError as exc:
        raise InputError(f"{submission}: cannot read submission ({exc})") from exc
    with fh:
        try:
            header = fh.readline().rstrip("\r\n")
            if header != HEADER:
                raise InputError(
                    f"{submission}: row 1: header is {header[:80]!r}, expected {HEADER!r}"
                )
            for row, line in enumerate(fh, start=2):
                line = line.rstrip("\r\n")
                fields = line.split(",", 3)
                image_id = fields[0]
                where = f"{submission}: row {row} / {image_id or '(empty)'}"
                if len(fields) != 4:
                    raise InputError(f"{where}: {len(fields)} fields, expected 4")
                if image_id not in list_row:
                    raise InputError(f"{where}: ImageID not in the image list {image_list}")
                if image_id in seen:
                    raise InputError(f"{where}: duplicate ImageID (first at row {seen[image_id]})")
                seen[image_id] = row
                width_text, height_text, preds = fields[1], fields[2], fields[3]
                if (
                    not (width_text.isdigit() and height_text.isdigit())
                    or int(width_text) <= 0
                    or int(height_text) <= 0
                ):
                    raise InputError(
                        f"{where}: ImageWidth/ImageHeight {width_text!r}/{height_text!r} "
                        "are not positive integers"
                    )
                problem = check_predictions(preds, int(width_text), int(height_text), classes)
                if problem:
                    raise InputError(f"{where}: {problem}")
                if preds.strip():
                    tokens = preds.split()
                    with_predictions += 1
                    predictions += len(tokens) // 3
                    labels_used.update(tokens[0::3])
        except UnicodeDecodeError as exc:
            raise InputError(f"{submission}: not UTF-8 text ({exc})") from exc
    if len(seen) != len(ids):
        missing = next(i for i in ids if i not in seen)
        raise InputError(
            f"{submission}: ImageID {missing} (row {list_row[missing]} of {image_list}) "
            f"is missing; {len(ids) - len(seen)} listed images are missing"
        )
    return SubmissionSummary(
        images=len(ids),
        images_with_predictions=with_predictions,
        predictions=predictions,
        labels_used=len(labels_used),
    )
