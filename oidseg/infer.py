"""Inference of one image-list shard with an ensemble of Cascade Mask R-CNN
models and test-time augmentation (SPEC section 6).

Input: an image-list pickle in the annotation format of docs/ARCHITECTURE.md
(``{"metainfo": ..., "data_list": [{"img_id", "img_path", "width",
"height", "instances": []}, ...]}``; ``data_list`` may be empty).

Models: (config, checkpoint) pairs. The class list is read from each
checkpoint's ``meta.dataset_meta.classes`` (written by the training script);
all models of an ensemble must carry the same list. Every bbox/mask head's
``num_classes`` in the config is overridden from that list before the weights
are loaded (strictly: a missing or unexpected weight is an error).

Output: the detection shard pickle (written atomically)::

    {"format": "oidseg-detections/1",
     "classes": [mid, ...],                 # label i -> classes[i]
     "images": [
       {"img_id": str, "width": int, "height": int,
        "labels": np.int64[n],              # 0-based index into classes
        "scores": np.float32[n],            # mean class probability over runs
        "bboxes": np.float32[n, 4],         # xyxy pixels of the original image
        "masks": [bytes, ...]}]}            # COCO compressed RLE 'counts',
                                            # height x width, Fortran order

Every input image appears once, in input order, also without detections
(n = 0). Images are read in their stored pixel orientation (EXIF orientation
ignored, as the header sizes of the annotation stage are), unless the record
says ``"exif_orientation": True`` (the image lists of ``predict``,
:mod:`oidseg.images`: EXIF orientation applied, any JPEG/PNG pixel format
converted to 8-bit BGR); an image whose size differs from the record's
width/height, or a missing/unreadable image, raises :class:`InputError`
naming it before anything is written.

Pipeline (:func:`detect_images`): with ``prefetch`` 0 one image after the
other (read, networks, masks, encode) in this thread; with ``prefetch`` N >= 1
a reader thread decodes up to N images ahead and an encoder thread pastes and
encodes the masks of up to N images behind the networks, so the device works
while the CPU reads and encodes. Both give the same records in the same
order, byte for byte (tests/test_infer_cli.py). Each image's log line gives
its seconds of reading, networks (``model``), mask pasting (``masks``) and RLE
encoding (``encode``).
"""

from __future__ import annotations

import copy
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from oidseg.errors import InputError, atomic_pickle, load_pickle

DETECTIONS_FORMAT = "oidseg-detections/1"
REQUIRED_RECORD_KEYS = ("img_id", "img_path", "width", "height")


@dataclass(frozen=True)
class ImageRecord:
    img_id: str
    img_path: str
    width: int
    height: int
    # True: pixels as displayed (EXIF orientation applied, any pixel format
    # converted; oidseg.images); False: stored pixels, 8-bit colour decode
    exif_orientation: bool = False


def load_image_list(path: str | Path) -> list[ImageRecord]:
    """Records of an image-list pickle (docs/ARCHITECTURE.md); bad records
    raise :class:`InputError` naming the file and the record."""
    data = load_pickle(path, kind="image list")
    if not isinstance(data, dict) or not isinstance(data.get("data_list"), list):
        raise InputError(f"{path}: image list must be a dict with a 'data_list' list")
    records = []
    for i, rec in enumerate(data["data_list"]):
        missing = [k for k in REQUIRED_RECORD_KEYS if not isinstance(rec, dict) or k not in rec]
        if missing:
            raise InputError(f"{path}: record {i}: missing {', '.join(missing)}")
        try:
            width, height = int(rec["width"]), int(rec["height"])
        except (TypeError, ValueError) as exc:
            raise InputError(f"{path}: record {i} / {rec['img_id']}: width/height are not integers") from exc
        if width <= 0 or height <= 0:
            raise InputError(f"{path}: record {i} / {rec['img_id']}: size {width}x{height}")
        records.append(ImageRecord(str(rec["img_id"]), str(rec["img_path"]), width, height,
                                   bool(rec.get("exif_orientation", False))))
    return records


def check_images_exist(records: Sequence[ImageRecord], list_path: str | Path) -> None:
    """Fail fast (before any inference) on the first missing image."""
    for rec in records:
        if not Path(rec.img_path).is_file():
            raise InputError(f"{rec.img_path} / {rec.img_id}: test image is missing (listed in {list_path})")


def read_image(rec: ImageRecord) -> np.ndarray:
    """BGR uint8 pixels (H, W, 3), stored orientation (or upright, with
    ``rec.exif_orientation``: :func:`oidseg.images.read_upright`); size
    checked against the record."""
    import mmcv

    if rec.exif_orientation:
        from oidseg.images import read_upright

        img = read_upright(rec.img_path, rec.img_id)
    else:
        try:
            img = mmcv.imread(rec.img_path, flag="color_ignore_orientation")
        except (OSError, ValueError) as exc:
            raise InputError(f"{rec.img_path} / {rec.img_id}: image is missing or unreadable ({exc})") from exc
    if img is None:
        raise InputError(f"{rec.img_path} / {rec.img_id}: image is missing or unreadable")
    if img.shape[:2] != (rec.height, rec.width):
        raise InputError(
            f"{rec.img_path} / {rec.img_id}: image is {img.shape[1]}x{img.shape[0]}, "
            f"the image list says {rec.width}x{rec.height}"
        )
    return img


def load_checkpoint_file(path: str | Path) -> dict:
    """A model checkpoint with ``state_dict`` and ``meta.dataset_meta.classes``,
    read weights-only (:func:`oidseg.checkpoints.load_checkpoint`: a file
    that would run code on load is refused)."""
    from oidseg.checkpoints import load_checkpoint

    ckpt = load_checkpoint(path, kind="checkpoint")
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise InputError(f"{path}: checkpoint has no 'state_dict'")
    return ckpt


def checkpoint_classes(ckpt: dict, path: str | Path) -> list[str]:
    classes = (ckpt.get("meta") or {}).get("dataset_meta", {}).get("classes")
    if not classes:
        raise InputError(f"{path}: checkpoint has no meta.dataset_meta.classes")
    return [str(c) for c in classes]


def build_model_from_config(config_path: str | Path, num_classes: int) -> torch.nn.Module:
    """Build (randomly initialised, no pretrained download) the detector of
    an mmdet config file, every head's ``num_classes`` overridden."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS

    from oidseg.mmdet_ext.model_cfg import set_num_classes

    config_path = Path(config_path)
    if not config_path.is_file():
        raise InputError(f"{config_path}: model config is missing")
    cfg = Config.fromfile(str(config_path))  # imports custom_imports (oidseg.mmdet_ext)
    init_default_scope(cfg.get("default_scope", "mmdet"))
    model_cfg = copy.deepcopy(cfg.model)
    set_num_classes(model_cfg, num_classes)
    model_cfg.get("backbone", {})["init_cfg"] = None
    model_cfg["train_cfg"] = None
    model = MODELS.build(model_cfg)
    model.cfg = cfg
    return model.eval()


def build_detector(config_path: str | Path, ckpt: dict, ckpt_path: str | Path, num_classes: int) -> torch.nn.Module:
    """Build a detector from an mmdet config file and load a checkpoint's
    weights strictly (mmdet ``init_detector`` without the pretrained init)."""
    from oidseg.checkpoints import fit_state_dict, state_dict_of

    model = build_model_from_config(config_path, num_classes)
    fit_state_dict(model, state_dict_of(ckpt, ckpt_path), ckpt_path, what=str(config_path))
    return model.eval()


def build_ensemble(models: Sequence[tuple[str, str]], *, scales, flips, score_thr, nms_iou, max_per_img,
                   mask_thr, rpn_nms, rpn_max, device: str, amp: bool = False) -> tuple[torch.nn.Module, list[str]]:
    """The :class:`OIDEnsembleTTA` of (config, checkpoint) pairs and the
    ensemble's class list (all checkpoints must agree)."""
    import oidseg.mmdet_ext.ensemble  # noqa: F401  (registers OIDEnsembleTTA)
    from oidseg.mmdet_ext.ensemble import OIDEnsembleTTA

    detectors, classes = [], None
    for config_path, ckpt_path in models:
        ckpt = load_checkpoint_file(ckpt_path)
        these = checkpoint_classes(ckpt, ckpt_path)
        if classes is None:
            classes, first = these, ckpt_path
        elif these != classes:
            raise InputError(
                f"{ckpt_path}: class list ({len(these)} classes) differs from {first}'s ({len(classes)} classes); "
                "the models of an ensemble must share their classes"
            )
        detectors.append(build_detector(config_path, ckpt, ckpt_path, len(classes)))
        del ckpt
    ensemble = OIDEnsembleTTA(detectors, scales=scales, flips=flips, score_thr=score_thr, nms_iou=nms_iou,
                              max_per_img=max_per_img, mask_thr=mask_thr, rpn_nms=rpn_nms, rpn_max=rpn_max,
                              amp=amp)
    return ensemble.to(device).eval(), classes


#: the phases of an image's log line, in order
PHASES = ("read", "model", "masks", "encode")


@dataclass
class PipelineStats:
    """Seconds per phase summed over the images, and the wall time."""

    images: int = 0
    wall: float = 0.0
    read: float = 0.0
    model: float = 0.0
    masks: float = 0.0
    encode: float = 0.0

    def summary(self) -> str:
        rate = self.images / self.wall if self.wall > 0 else 0.0
        per = ", ".join(f"{p} {getattr(self, p) / max(self.images, 1):.3f} s" for p in PHASES)
        return f"{self.images} images in {self.wall:.1f} s ({rate:.3f} images/s); mean per image: {per}"


def _timed_read(rec: ImageRecord) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    img = read_image(rec)
    return img, time.perf_counter() - start


def detect_images(ensemble: torch.nn.Module, records: Sequence[ImageRecord],
                  progress: Callable[[str], None] | None = None, *, prefetch: int = 0,
                  stats: PipelineStats | None = None, per_image: list | None = None) -> list[dict]:
    """One detection record per image (docs/ARCHITECTURE.md, Inference), in
    input order. ``prefetch`` 0: read, networks, masks and encoding one after
    another in this thread; N >= 1: the next N images are decoded in a reader
    thread and the masks of up to N images are pasted and encoded in an
    encoder thread while the networks run (same records, byte for byte).
    A read error (:class:`InputError`) stops the loop and is raised; nothing
    is returned. ``stats`` sums the phases' seconds and the wall time;
    ``per_image`` gets each image's seconds per phase (a dict), in order."""
    from oidseg.mmdet_ext.ensemble import Timings

    if prefetch < 0:
        raise ValueError(f"prefetch must be >= 0, not {prefetch}")
    stats = stats if stats is not None else PipelineStats()
    started = time.perf_counter()
    images: list[dict] = []

    def finish(det, read_s: float, model_s: float) -> tuple[dict, Timings]:
        timings = Timings(read=read_s, model=model_s)
        return ensemble.finish(det, timings=timings), timings

    def record(i: int, rec: ImageRecord, det: dict, timings: dict) -> None:
        images.append(dict(img_id=rec.img_id, width=rec.width, height=rec.height, **det))
        stats.images += 1
        for phase in PHASES:
            setattr(stats, phase, getattr(stats, phase) + timings.get(phase, 0.0))
        if per_image is not None:
            per_image.append(dict(timings))
        if progress is not None:
            phases = ", ".join(f"{p} {timings.get(p, 0.0):.3f}" for p in PHASES)
            progress(f"[{i + 1}/{len(records)}] {rec.img_id}: {len(det['scores'])} detections "
                     f"(s: {phases})")

    if prefetch == 0:
        for i, rec in enumerate(records):
            img, read_s = _timed_read(rec)
            start = time.perf_counter()
            pending = ensemble.detect(img)
            det, timings = finish(pending, read_s, time.perf_counter() - start)
            record(i, rec, det, timings)
    else:
        with ThreadPoolExecutor(1, thread_name_prefix="read") as reader, \
                ThreadPoolExecutor(1, thread_name_prefix="encode") as encoder:
            reads: deque = deque()
            encodes: deque = deque()
            next_read = 0
            try:
                for i, rec in enumerate(records):
                    while next_read < len(records) and next_read <= i + prefetch:
                        reads.append(reader.submit(_timed_read, records[next_read]))
                        next_read += 1
                    img, read_s = reads.popleft().result()
                    start = time.perf_counter()
                    pending = ensemble.detect(img)
                    del img
                    encodes.append((i, rec, encoder.submit(finish, pending, read_s, time.perf_counter() - start)))
                    while len(encodes) > prefetch:
                        j, done_rec, future = encodes.popleft()
                        record(j, done_rec, *future.result())
                while encodes:
                    j, done_rec, future = encodes.popleft()
                    record(j, done_rec, *future.result())
            except BaseException:
                for future in [*reads, *(f for _, _, f in encodes)]:
                    future.cancel()
                raise
    stats.wall += time.perf_counter() - started
    return images


def write_detections(path: str | Path, classes: Sequence[str], images: list[dict]) -> None:
    atomic_pickle(path, {"format": DETECTIONS_FORMAT, "classes": list(classes), "images": images})


def stderr_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is visible")
    return name
