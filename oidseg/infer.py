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
from typing import Any, Callable, Sequence

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
    """An mmengine checkpoint (our own trusted file) with ``state_dict`` and
    ``meta.dataset_meta.classes``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint is missing")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise InputError(f"{path}: checkpoint is truncated or corrupt ({exc})") from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise InputError(f"{path}: checkpoint has no 'state_dict'")
    return ckpt


def checkpoint_classes(ckpt: dict, path: str | Path) -> list[str]:
    classes = (ckpt.get("meta") or {}).get("dataset_meta", {}).get("classes")
    if not classes:
        raise InputError(f"{path}: checkpoint has no meta.dataset_meta.classes")
    return [str(c) for c in classes]


def set_num_classes(model_cfg: Any, num_classes: int) -> None:
    """Override ``num_classes`` of every bbox and mask head of a (Cascade)
    RoI head config in place."""
    roi_head = model_cfg["roi_head"]
    for key in ("bbox_head", "mask_head"):
        heads = roi_head.get(key)
        if heads is None:
            continue
        for head in heads if isinstance(heads, (list, tuple)) else [heads]:
            head["num_classes"] = num_classes


def build_model_from_config(config_path: str | Path, num_classes: int) -> torch.nn.Module:
    """Build (randomly initialised, no pretrained download) the detector of
    an mmdet config file, every head's ``num_classes`` overridden."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS

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
    model = build_model_from_config(config_path, num_classes)
    state = {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise InputError(
            f"{ckpt_path}: weights do not fit {config_path} "
            f"(missing {list(result.missing_keys)[:5]}, unexpected {list(result.unexpected_keys)[:5]})"
        )
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


def tiny_cascade_config(num_classes: int = 3) -> Any:
    """A tiny Cascade Mask R-CNN config of mmdet's own components (ResNet-18
    with 16 base channels, 32-channel FPN, 64-wide box heads, 100 test
    proposals), for tests and CPU benchmarks. Same structure as the full
    models: 3 stages, class-agnostic regression, 28x28 FCN masks."""
    stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067]]
    ch = 32

    def box_head(std):
        return dict(type="Shared2FCBBoxHead", in_channels=ch, fc_out_channels=64, roi_feat_size=7,
                    num_classes=num_classes, reg_class_agnostic=True,
                    bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=std),
                    loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
                    loss_bbox=dict(type="SmoothL1Loss", beta=1.0, loss_weight=1.0))

    model = dict(
        type="CascadeRCNN",
        data_preprocessor=dict(type="DetDataPreprocessor", mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_mask=True, pad_size_divisor=32),
        backbone=dict(type="ResNet", depth=18, base_channels=16, num_stages=4, out_indices=(0, 1, 2, 3),
                      frozen_stages=-1, norm_cfg=dict(type="BN", requires_grad=True), norm_eval=True,
                      style="pytorch", init_cfg=None),
        neck=dict(type="FPN", in_channels=[16, 32, 64, 128], out_channels=ch, num_outs=5),
        rpn_head=dict(type="RPNHead", in_channels=ch, feat_channels=ch,
                      anchor_generator=dict(type="AnchorGenerator", scales=[8], ratios=[0.5, 1.0, 2.0],
                                            strides=[4, 8, 16, 32, 64]),
                      bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4),
                      loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
                      loss_bbox=dict(type="SmoothL1Loss", beta=1.0 / 9.0, loss_weight=1.0)),
        roi_head=dict(
            type="CascadeRoIHead", num_stages=3, stage_loss_weights=[1, 0.5, 0.25],
            bbox_roi_extractor=dict(type="SingleRoIExtractor",
                                    roi_layer=dict(type="RoIAlign", output_size=7, sampling_ratio=0),
                                    out_channels=ch, featmap_strides=[4, 8, 16, 32]),
            bbox_head=[box_head(s) for s in stds],
            mask_roi_extractor=dict(type="SingleRoIExtractor",
                                    roi_layer=dict(type="RoIAlign", output_size=14, sampling_ratio=0),
                                    out_channels=ch, featmap_strides=[4, 8, 16, 32]),
            mask_head=dict(type="FCNMaskHead", num_convs=4, in_channels=ch, conv_out_channels=ch,
                           num_classes=num_classes,
                           loss_mask=dict(type="CrossEntropyLoss", use_mask=True, loss_weight=1.0))),
        train_cfg=None,
        test_cfg=dict(
            rpn=dict(nms_pre=200, max_per_img=100, nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0),
            rcnn=dict(score_thr=0.0, nms=dict(type="nms", iou_threshold=0.5), max_per_img=120, mask_thr_binary=0.5)),
    )
    from mmengine.config import ConfigDict

    return ConfigDict(default_scope="mmdet", model=model)
