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
ignored, as the header sizes of the annotation stage are); an image whose
size differs from the record's width/height, or a missing/unreadable image,
raises :class:`InputError` naming it before anything is written.
"""

from __future__ import annotations

import copy
import sys
import time
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
        records.append(ImageRecord(str(rec["img_id"]), str(rec["img_path"]), width, height))
    return records


def check_images_exist(records: Sequence[ImageRecord], list_path: str | Path) -> None:
    """Fail fast (before any inference) on the first missing image."""
    for rec in records:
        if not Path(rec.img_path).is_file():
            raise InputError(f"{rec.img_path} / {rec.img_id}: test image is missing (listed in {list_path})")


def read_image(rec: ImageRecord) -> np.ndarray:
    """BGR uint8 pixels (H, W, 3), stored orientation; size checked against the record."""
    import mmcv

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
                   mask_thr, rpn_nms, rpn_max, device: str) -> tuple[torch.nn.Module, list[str]]:
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
                              max_per_img=max_per_img, mask_thr=mask_thr, rpn_nms=rpn_nms, rpn_max=rpn_max)
    return ensemble.to(device).eval(), classes


def detect_images(ensemble: torch.nn.Module, records: Sequence[ImageRecord],
                  progress: Callable[[str], None] | None = None) -> list[dict]:
    """One detection record per image (docs/ARCHITECTURE.md, Inference)."""
    images = []
    for i, rec in enumerate(records):
        start = time.perf_counter()
        det = ensemble.predict_image(read_image(rec))
        images.append(dict(img_id=rec.img_id, width=rec.width, height=rec.height, **det))
        if progress is not None:
            progress(f"[{i + 1}/{len(records)}] {rec.img_id}: {len(det['scores'])} detections "
                     f"({time.perf_counter() - start:.2f} s)")
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
