"""Masks drawn on images: ground truth beside the submitted masks.

The predictions come from the Kaggle CSVs the workflow writes (their
``EncodedMask`` decoded with :func:`oidseg.kaggle.decode_mask` and
pycocotools), so a figure shows exactly what is submitted. Every class has
its own colour (:func:`class_colours`); a mask is blended into the image at
:data:`MASK_ALPHA` and outlined in the full colour; the display name (and the
score of a prediction) is written at the object's top-left corner. Group-of
and box-only ground truth are dashed boxes.

:func:`render_image` draws the same on one image at its own size (the PNG
per image of ``predict``). Figures are matplotlib grids of panels
(:func:`plot_grid`); the held-out
figure alternates ground truth and submission panels, the test figure has
submission panels only (``scripts/visualize.py``). :func:`write_pr_curves` /
:func:`read_pr_curves` carry the scorer's per-class precision/recall arrays to
the report's PR curves.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from oidseg.errors import InputError, atomic_path
from oidseg.kaggle import decode_mask, iter_shard, parse_score, rle_totals

#: opacity of a mask over the image
MASK_ALPHA = 0.55
#: matplotlib's tab10 (without its grey), then golden-ratio hues
_BASE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                 "#8c564b", "#e377c2", "#bcbd22", "#17becf")
#: panel size in inches and figure resolution
PANEL_INCHES = 2.8
DPI = 100


@dataclass
class Instance:
    """One object to draw: a mask (bool [h, w]) and/or a pixel box."""

    label: str  # class MID
    mask: np.ndarray | None  # bool [h, w] at the image size, None: box only
    box: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1 pixels
    score: float | None = None  # predictions only
    group_of: bool = False


@dataclass
class Panel:
    """One image with its instances and a title."""

    image: np.ndarray  # uint8 RGB [h, w, 3]
    instances: list[Instance]
    title: str


# --------------------------------------------------------------------------- colours


def class_colours(classes: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """A distinct RGB colour (0-255) per class, fixed by its position in
    ``classes`` (the class-description order)."""
    colours = {}
    for k, mid in enumerate(classes):
        if k < len(_BASE_COLOURS):
            text = _BASE_COLOURS[k]
            rgb = tuple(int(text[i:i + 2], 16) for i in (1, 3, 5))
        else:
            hue = (k * 0.6180339887) % 1.0
            rgb = tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue, 0.85, 0.9))
        colours[mid] = rgb
    return colours


def blend(image: np.ndarray, colour: Sequence[int], alpha: float = MASK_ALPHA) -> np.ndarray:
    """``image`` pixels blended with ``colour`` (uint8): what a mask pixel shows."""
    mixed = (1.0 - alpha) * image.astype(np.float64) + alpha * np.asarray(colour, np.float64)
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def draw_masks(image: np.ndarray, instances: Iterable[Instance],
               colours: dict[str, tuple[int, int, int]]) -> np.ndarray:
    """A copy of ``image`` (uint8 RGB) with each mask blended in its class
    colour and outlined (1 px) in the full colour, in the given order (later
    instances on top)."""
    out = image.copy()
    for inst in instances:
        if inst.mask is None or not inst.mask.any():
            continue
        colour = colours[inst.label]
        out[inst.mask] = blend(out[inst.mask], colour)
        contours, _ = cv2.findContours(inst.mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in colour), 1)
    return out


# --------------------------------------------------------------------------- inputs


def read_image(path: str | Path, image_id: str) -> np.ndarray:
    """An image as uint8 RGB; a missing or unreadable file is an InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} / {image_id}: image is missing")
    data = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if data is None:
        raise InputError(f"{path} / {image_id}: image is unreadable")
    return cv2.cvtColor(data, cv2.COLOR_BGR2RGB)


@dataclass
class SubmittedImage:
    """The predictions of one CSV row, not yet decoded."""

    row: int
    image_id: str
    width: int
    height: int
    labels: list[str]
    scores: np.ndarray
    encoded: list[str]


def parse_row(path: Path, row, known: set[str]) -> SubmittedImage:
    """A :class:`oidseg.kaggle.ShardRow` -> :class:`SubmittedImage`; unknown
    classes and bad scores name the file, row and value."""
    where = f"{path}: row {row.row} / {row.image_id}"
    parts = row.predictions.split()
    if len(parts) % 3:
        raise InputError(f"{where}: PredictionString has {len(parts)} fields, "
                         "not triples 'LabelName Confidence EncodedMask'")
    labels = parts[0::3]
    unknown = [name for name in labels if name not in known]
    if unknown:
        raise InputError(f"{where}: unknown class {unknown[0]!r}")
    try:
        scores = np.asarray([parse_score(text) for text in parts[1::3]], dtype=np.float64)
    except ValueError as exc:
        raise InputError(f"{where}: a Confidence is not a finite number ({exc})") from exc
    return SubmittedImage(row.row, row.image_id, row.width, row.height, labels, scores,
                          parts[2::3])


def read_submission_rows(path: str | Path, image_ids: Sequence[str],
                         known_classes: Iterable[str]) -> dict[str, SubmittedImage]:
    """The rows of ``image_ids`` in a Kaggle CSV (streamed; other rows are
    not parsed). An image without a row has no predictions."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: submission file is missing")
    wanted, known = set(image_ids), set(known_classes)
    found: dict[str, SubmittedImage] = {}
    for row in iter_shard(path):
        if row.image_id in wanted:
            if row.image_id in found:
                raise InputError(f"{path}: row {row.row}: duplicate ImageID {row.image_id!r}")
            found[row.image_id] = parse_row(path, row, known)
    return found


def first_rows_with_predictions(path: str | Path, n: int, known_classes: Iterable[str],
                                score_thr: float) -> list[SubmittedImage]:
    """The first ``n`` rows (file order) with a prediction scoring at least
    ``score_thr``; when fewer exist, the first rows without one fill up."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: submission file is missing")
    known = set(known_classes)
    chosen: list[SubmittedImage] = []
    fallback: list[SubmittedImage] = []
    for row in iter_shard(path):
        item = parse_row(path, row, known)
        if (item.scores >= score_thr).any():
            chosen.append(item)
            if len(chosen) == n:
                break
        elif len(fallback) < n:
            fallback.append(item)
    return chosen + fallback[: n - len(chosen)]


def decode_predictions(item: SubmittedImage, height: int, width: int, score_thr: float,
                       *, where: str) -> list[Instance]:
    """The predictions of ``item`` scoring at least ``score_thr``, masks
    decoded at the submitted size and resized (nearest) to ``height x width``
    when the image differs; lowest score first (drawn first; equal scores in
    reverse file order, so a leaf is drawn over its hierarchy copies). Empty
    masks are left out."""
    keep = np.flatnonzero(item.scores >= score_thr)
    # lowest score first; among equal scores the later triple first, so that
    # a leaf mask is drawn over its hierarchy copies (which follow it)
    keep = keep[np.lexsort((-keep, item.scores[keep]))]
    instances = []
    for k in keep:
        try:  # bounded inflation; the run lengths are checked before pycocotools
            counts = decode_mask(item.encoded[k], item.height, item.width)
        except ValueError as exc:
            raise InputError(f"{where}: detection {k + 1}: EncodedMask cannot be decoded "
                             f"({exc})") from None
        total = int(rle_totals([counts])[0])
        if total != item.height * item.width:
            raise InputError(f"{where}: detection {k + 1}: EncodedMask RLE covers {total} "
                             f"pixels, not ImageHeight x ImageWidth = {item.height} x {item.width}")
        mask = mask_utils.decode({"size": [item.height, item.width], "counts": counts})
        if mask.shape != (height, width):
            mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
        if not mask.any():  # nothing to draw (the metric drops empty masks too)
            continue
        instances.append(Instance(label=item.labels[k], mask=mask.astype(bool),
                                  score=float(item.scores[k])))
    return instances


def ground_truth_instances(gt, image_index: int) -> list[Instance]:
    """Instances of one image of an (unexpanded) ``oidseg.metric.GroundTruth``:
    masks, plus a pixel box for group-of and box-only rows."""
    height, width = int(gt.heights[image_index]), int(gt.widths[image_index])
    out = []
    for i in np.flatnonzero(gt.inst_image == image_index):
        rle = gt.inst_rle[i]
        mask = mask_utils.decode(rle).astype(bool) if rle is not None else None
        has_mask = mask is not None and mask.any()
        box = None
        if gt.inst_group_of[i] or not has_mask:
            ymin, xmin, ymax, xmax = gt.inst_box[i]
            box = (xmin * width, ymin * height, xmax * width, ymax * height)
        out.append(Instance(label=str(gt.inst_label[i]), mask=mask if has_mask else None,
                            box=box, group_of=bool(gt.inst_group_of[i])))
    return out


# --------------------------------------------------------------------------- figures


def _mask_box(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min())


@dataclass
class Label:
    """A text label at an object's top-left corner (pixels)."""

    x: float
    y: float
    text: str
    rgb: tuple[float, float, float]  # 0..1
    inside: bool  # at the image's top edge: drawn just inside the object


def instance_labels(instances: Sequence[Instance], colours: dict, names: dict[str, str],
                    image_height: int) -> tuple[list[Label], list[Instance]]:
    """One label per (corner, score): the hierarchy copies of a mask share
    theirs ("Car / Land vehicle 0.91": the instance drawn last, on top,
    first, in its colour); and the dashed boxes to draw (group-of and
    box-only ground truth)."""
    grouped: dict[tuple, list] = {}
    boxes = []
    for inst in instances:
        rgb = tuple(float(c) / 255.0 for c in colours[inst.label])
        text = names.get(inst.label) or inst.label
        if inst.box is not None:
            boxes.append(inst)
            text += " (group)" if inst.group_of else ("" if inst.mask is not None else " (box)")
            anchor = (inst.box[0], inst.box[1])
        elif inst.mask is not None and inst.mask.any():
            anchor = _mask_box(inst.mask)
        else:
            continue
        key = (round(anchor[0], 1), round(anchor[1], 1), inst.score)
        group = grouped.setdefault(key, [rgb, []])
        group[0] = rgb  # the colour on top
        group[1].append(text)
    labels = []
    for (x, y, score), (rgb, texts) in grouped.items():
        text = " / ".join(dict.fromkeys(reversed(texts))) + ("" if score is None else f" {score:.2f}")
        labels.append(Label(x, y, text, rgb, y < 0.06 * image_height))
    return labels, boxes


def _draw_panel(ax, panel: Panel, colours: dict, names: dict[str, str]) -> None:
    from matplotlib.patches import Rectangle

    ax.imshow(draw_masks(panel.image, panel.instances, colours), interpolation="nearest")
    labels, boxes = instance_labels(panel.instances, colours, names, panel.image.shape[0])
    for inst in boxes:
        x0, y0, x1, y1 = inst.box
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False,
                               edgecolor=np.asarray(colours[inst.label]) / 255.0,
                               linestyle="--", linewidth=1.2))
    for label in labels:
        # above the object, or just inside it at the image's top edge
        ax.text(label.x, label.y, label.text, fontsize=5.5, color="white",
                va="top" if label.inside else "bottom", ha="left", clip_on=True,
                bbox={"facecolor": label.rgb, "alpha": 0.8, "pad": 0.8, "linewidth": 0})
    ax.set_title(panel.title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def render_image(image: np.ndarray, instances: Sequence[Instance], colours: dict,
                 names: dict[str, str]) -> np.ndarray:
    """``image`` (uint8 RGB) at its own size with the masks drawn as in the
    figures (:func:`draw_masks`) and each label (class names and score,
    :func:`instance_labels`) in a box of the class colour: what ``predict``
    writes per image."""
    out = draw_masks(image, instances, colours)
    height, width = out.shape[:2]
    labels, boxes = instance_labels(instances, colours, names, height)
    thickness = max(1, round(max(height, width) / 800))
    for inst in boxes:
        x0, y0, x1, y1 = (int(round(v)) for v in inst.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), tuple(int(c) for c in colours[inst.label]), thickness)
    scale = max(0.35, max(height, width) / 1600)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for label in labels:
        (tw, th), base = cv2.getTextSize(label.text, font, scale, thickness)
        pad = max(1, thickness)
        x = int(min(max(0, label.x), max(0, width - tw - 2 * pad)))
        top = int(label.y) if label.inside else int(label.y) - th - base - 2 * pad
        top = min(max(0, top), max(0, height - th - base - 2 * pad))
        box = (x, top), (x + tw + 2 * pad, top + th + base + 2 * pad)
        fill = tuple(int(round(255 * c)) for c in label.rgb)
        region = out[box[0][1]:box[1][1], box[0][0]:box[1][0]]
        region[...] = blend(region, fill, 0.8)
        cv2.putText(out, label.text, (x + pad, top + pad + th), font, scale, (255, 255, 255), thickness,
                    cv2.LINE_AA)
    return out


def plot_grid(panels: Sequence[Panel | None], ncols: int, out: str | Path, *,
              colours: dict, names: dict[str, str], title: str) -> tuple[int, int]:
    """Panels in a grid (``None`` leaves a cell empty), saved atomically as a
    PNG; returns its (width, height) in pixels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = max(1, min(ncols, len(panels)))
    nrows = max(1, math.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, squeeze=False,
                             figsize=(PANEL_INCHES * ncols, PANEL_INCHES * nrows + 0.4))
    for k, ax in enumerate(axes.ravel()):
        if k < len(panels) and panels[k] is not None:
            _draw_panel(ax, panels[k], colours, names)
        else:
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
        size = fig.canvas.get_width_height()
    finally:
        plt.close(fig)
    return int(size[0]), int(size[1])


# --------------------------------------------------------------------------- selection


def choose_images(image_ids: Sequence[str], has_mask: Callable[[str], bool], n: int) -> list[str]:
    """The first ``n`` of ``image_ids`` (their order), images with mask
    ground truth before the others."""
    ids = list(image_ids)
    with_mask = [i for i in ids if has_mask(i)]
    chosen = set(with_mask)
    return (with_mask + [i for i in ids if i not in chosen])[:n]


# --------------------------------------------------------------------------- PR curves


@dataclass
class PrCurves:
    """Per-class precision/recall arrays of one scored submission."""

    classes: list[str]
    names: list[str]
    num_gt: np.ndarray
    average_precision: np.ndarray
    precision: list[np.ndarray]
    recall: list[np.ndarray]

    def top_classes(self, n: int) -> list[int]:
        """Indices of the ``n`` classes with the most ground truth (ties:
        class order), classes without ground truth left out."""
        order = np.argsort(-self.num_gt, kind="stable")
        return [int(i) for i in order[:n] if self.num_gt[i] > 0]


def write_pr_curves(path: str | Path, result, names: dict[str, str]) -> None:
    """An ``oidseg.metric.EvaluationResult``'s curves -> ``.npz`` (atomic):
    ``classes``, ``names``, ``num_gt``, ``ap`` and the concatenated
    ``precision``/``recall`` arrays split by ``offsets`` (class k:
    ``offsets[k]:offsets[k + 1]``)."""
    lengths = [len(p) for p in result.precision]
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)

    def joined(arrays) -> np.ndarray:
        return np.concatenate([np.asarray(a, np.float64) for a in arrays]) if arrays else np.zeros(0)

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(
            fh, classes=np.asarray(result.classes, dtype=str),
            names=np.asarray([names.get(c, "") for c in result.classes], dtype=str),
            num_gt=np.asarray(result.num_gt, np.int64),
            ap=np.asarray(result.average_precision, np.float64), offsets=offsets,
            precision=joined(result.precision), recall=joined(result.recall))


def read_pr_curves(path: str | Path) -> PrCurves:
    """Read what :func:`write_pr_curves` wrote; a missing or malformed file
    is an InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: precision-recall file is missing")
    keys = ("classes", "names", "num_gt", "ap", "offsets", "precision", "recall")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in keys}
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise InputError(f"{path}: not a precision-recall .npz with {', '.join(keys)} ({exc})") from exc
    offsets, n = arrays["offsets"], len(arrays["classes"])
    if len(offsets) != n + 1 or offsets[-1] != len(arrays["precision"]) or \
            len(arrays["recall"]) != len(arrays["precision"]):
        raise InputError(f"{path}: offsets do not match the {n} classes and curve arrays")
    return PrCurves(
        classes=[str(c) for c in arrays["classes"]], names=[str(c) for c in arrays["names"]],
        num_gt=arrays["num_gt"], average_precision=arrays["ap"],
        precision=[arrays["precision"][offsets[k]:offsets[k + 1]] for k in range(n)],
        recall=[arrays["recall"][offsets[k]:offsets[k + 1]] for k in range(n)])
