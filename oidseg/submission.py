"""Check a Kaggle instance-segmentation submission before it is uploaded.

What is valid is decided by :mod:`oidseg.validity`, the module the scorer
(``oidseg.metric.read_submission``) uses too: the same row rules, the same
image-list rule (every row's ImageID is listed, every listed image appears),
the same declared-size rule when the true sizes are known. Only the
validator's own option differs: with ``sizes`` (``--image-sizes``) every
listed image must have a true size. It stops at the first bad row, named by
its row number (the header is row 1) and ImageID.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from oidseg.errors import InputError, load_pickle
from oidseg.validity import ImageList, iter_submission, row_predictions


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


def read_image_sizes(paths: Sequence[str | Path]) -> dict[str, tuple[int, int]]:
    """True image sizes, ImageID -> (width, height), from image-list
    annotation pickles written by ``build_annotations.py images`` (the test
    shards or ``val_images.pkl``: records with ``img_id``, ``width``,
    ``height``) or from CSV tables ``ImageID,ImageWidth,ImageHeight``."""
    from oidseg.raw import read_sizes_csv

    sizes: dict[str, tuple[int, int]] = {}
    for path in map(Path, paths):
        if path.suffix == ".pkl":
            payload = load_pickle(path, kind="image-list annotation")
            records = payload.get("data_list") if isinstance(payload, dict) else None
            if not isinstance(records, list):
                raise InputError(f"{path}: not an annotation pickle (no 'data_list')")
            for k, rec in enumerate(records):
                try:
                    image_id, width, height = str(rec["img_id"]), int(rec["width"]), int(rec["height"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise InputError(f"{path}: record {k}: no img_id/width/height ({exc})") from exc
                sizes[image_id] = (width, height)
        else:
            table = read_sizes_csv(path)
            for image_id, width, height in zip(
                table.index.tolist(), table.widths.tolist(), table.heights.tolist()
            ):
                sizes[str(image_id)] = (int(width), int(height))
    return sizes


def validate_submission(
    submission: str | Path,
    image_list: str | Path,
    classes: set[str],
    sizes: dict[str, tuple[int, int]] | None = None,
) -> SubmissionSummary:
    """Raise :class:`InputError` at the first problem; return a summary.

    ``sizes`` (ImageID -> (width, height)): the true sizes; with it, every
    listed image must have one and every row must declare it.
    """
    submission = Path(submission)
    images = ImageList.read(image_list)
    if sizes is not None:
        unsized = next((i for i in images.ids if i not in sizes), None)
        if unsized is not None:
            raise InputError(f"{image_list}: row {images.rows[unsized]} / {unsized}: "
                             "no true image size given")
    with_predictions = predictions = 0
    labels_used: set[str] = set()
    for row in iter_submission(submission, sizes, images):
        checked = row_predictions(submission, row, classes)
        if len(checked):
            with_predictions += 1
            predictions += len(checked)
            labels_used.update(checked.labels)
    ids = images.ids
    return SubmissionSummary(
        images=len(ids),
        images_with_predictions=with_predictions,
        predictions=predictions,
        labels_used=len(labels_used),
    )
