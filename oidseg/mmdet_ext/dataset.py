"""``OIDSegDataset``: our annotation pickle as an mmdet 3.x dataset.

The pickle (docs/ARCHITECTURE.md) is already in mmdet's middle format::

    {"metainfo": {"classes": [mid, ...], "names": [...]},
     "data_list": [{"img_id", "img_path", "width", "height", "source",
                    "mask_dir", "instances": [{"bbox", "bbox_label",
                                               "mask_file", "ignore_flag"}]}]}

Masks stay on disk; ``LoadOIDAnnotations`` reads them per sample.
No record is filtered out: the training lists are indices into ``data_list``
and must stay valid, so ``filter_cfg`` is ignored.
Relative ``img_path``/``mask_dir`` are joined to ``data_root`` when one is
given (otherwise they are relative to the working directory).
"""

from __future__ import annotations

import os
import os.path as osp
from typing import Any

import numpy as np
from mmdet.datasets import BaseDetDataset
from mmdet.registry import DATASETS

from oidseg.errors import InputError, load_pickle

RECORD_KEYS = ("img_id", "img_path", "width", "height", "instances")
INSTANCE_KEYS = ("bbox", "bbox_label", "mask_file")


def read_classes(ann_file: str) -> list[str]:
    """The class MIDs of an annotation pickle (its label order)."""
    ann = load_pickle(ann_file, kind="annotation pickle")
    return list(_checked_metainfo(ann, ann_file)["classes"])


def _checked_metainfo(ann: Any, ann_file: str) -> dict:
    if not isinstance(ann, dict) or "metainfo" not in ann or "data_list" not in ann:
        raise InputError(f"{ann_file}: not an annotation pickle (needs 'metainfo' and 'data_list')")
    meta = ann["metainfo"]
    if not isinstance(meta, dict) or not meta.get("classes"):
        raise InputError(f"{ann_file}: metainfo has no class list")
    return meta


def _checked_instances(rec: dict, ann_file: str, n_classes: int) -> list[dict]:
    where = f"{ann_file}: image {rec.get('img_id')}"
    instances = rec["instances"]
    if not instances:
        return []
    for key in INSTANCE_KEYS:
        missing = [i for i, inst in enumerate(instances) if key not in inst]
        if missing:
            raise InputError(f"{where}: instance {missing[0]} has no '{key}'")
    boxes = np.asarray([inst["bbox"] for inst in instances], dtype=np.float64)
    labels = np.asarray([inst["bbox_label"] for inst in instances])
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.isfinite(boxes).all():
        raise InputError(f"{where}: bbox must be 4 finite numbers [x1, y1, x2, y2]")
    bad = np.flatnonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
    if bad.size:
        raise InputError(f"{where}: instance {int(bad[0])} has x2 < x1 or y2 < y1: "
                         f"{boxes[bad[0]].tolist()}")
    bad = np.flatnonzero((labels < 0) | (labels >= n_classes))
    if bad.size:
        raise InputError(f"{where}: instance {int(bad[0])} has bbox_label {labels[bad[0]]} "
                         f"outside 0..{n_classes - 1}")
    return [
        {"bbox": [float(v) for v in box], "bbox_label": int(label),
         "mask_file": inst["mask_file"], "ignore_flag": int(inst.get("ignore_flag", 0))}
        for box, label, inst in zip(boxes, labels, instances)
    ]


@DATASETS.register_module()
class OIDSegDataset(BaseDetDataset):
    """Open Images instance segmentation from our annotation pickle."""

    METAINFO: dict = {"classes": ()}

    def load_data_list(self) -> list[dict]:
        ann_file = self.ann_file
        ann = load_pickle(ann_file, kind="annotation pickle")
        meta = _checked_metainfo(ann, ann_file)
        given = self._metainfo.get("classes")
        if given and list(given) != list(meta["classes"]):
            raise InputError(f"{ann_file}: class list differs from the one given in metainfo")
        for key, value in meta.items():
            if key == "classes" or not self._metainfo.get(key):
                self._metainfo[key] = value
        n_classes = len(meta["classes"])
        records = ann["data_list"]
        if not isinstance(records, list):
            raise InputError(f"{ann_file}: data_list is not a list")
        data_list = []
        for row, rec in enumerate(records):
            missing = [key for key in RECORD_KEYS if key not in rec]
            if missing:
                raise InputError(f"{ann_file}: record {row} ({rec.get('img_id')}) has no "
                                 f"{', '.join(missing)}")
            info = {
                "img_id": rec["img_id"],
                "img_path": self._rooted(rec["img_path"]),
                "width": int(rec["width"]),
                "height": int(rec["height"]),
                "source": rec.get("source", ""),
                "instances": _checked_instances(rec, ann_file, n_classes),
            }
            if rec.get("mask_dir") is not None:
                info["mask_dir"] = self._rooted(rec["mask_dir"])
            elif info["instances"]:
                raise InputError(f"{ann_file}: image {rec['img_id']} has instances but no mask_dir")
            data_list.append(info)
        return data_list

    def _rooted(self, path: str) -> str:
        if self.data_root and not osp.isabs(path):
            return osp.join(self.data_root, path)
        return path

    def filter_data(self) -> list[dict]:
        """Keep every record: training lists index ``data_list`` directly."""
        return self.data_list

    def prepare_data(self, idx: int) -> Any:
        """The pipeline's sample; an image that is missing or cannot be
        decoded (a truncated JPEG) raises :class:`InputError` naming it and
        the annotation pickle, not mmcv's ``AssertionError``. Any other
        failure of the pipeline is re-raised as it is. (A JPEG cut short
        after its first scan lines decodes, grey at the bottom, as with
        OpenCV everywhere; nothing checks images beyond that.)"""
        try:
            return super().prepare_data(idx)
        except InputError:
            raise
        except Exception as exc:
            info = self.get_data_info(idx)
            problem = unreadable_image(info["img_path"])
            if problem is None:
                raise
            raise InputError(f"{info['img_path']}: training image {info['img_id']} {problem} "
                             f"(listed in {self.ann_file}; {type(exc).__name__}: {exc})") from None


def unreadable_image(path: str) -> str | None:
    """Why ``path`` cannot be used as an image (None: it decodes)."""
    import cv2

    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        return f"is missing or unreadable ({exc.strerror or exc})"
    if data.size == 0 or cv2.imdecode(data, cv2.IMREAD_COLOR) is None:
        return "cannot be decoded (truncated or corrupt)"
    return None


# --------------------------------------------------------------------------
# Synthetic data in the same pickle format, for tests and benchmarks.

SHAPES = ("rectangle", "ellipse", "triangle")
COLOURS_BGR = ((40, 40, 220), (40, 200, 40), (220, 80, 40), (30, 210, 230))


def make_synthetic_dataset(out_dir: str, n_images: int, n_classes: int = 3, seed: int = 0,
                           size_range: tuple[int, int] = (160, 256),
                           mask_scale: tuple[float, float] = (0.75, 0.6)) -> dict:
    """Write coloured shapes on noise as JPEGs + mask PNGs + our pickle.

    Class ``c`` is shape ``SHAPES[c % 3]`` in colour ``COLOURS_BGR[c // 3]``
    (up to 12 classes); 1-3 objects per image. The mask PNGs are drawn at
    ``mask_scale`` x the image size (not the image's size, like Open Images).
    Returns the annotation dict (also written to ``out_dir/ann.pkl``).
    """
    import cv2

    from oidseg.errors import atomic_pickle

    if not 1 <= n_classes <= len(SHAPES) * len(COLOURS_BGR):
        raise ValueError(f"n_classes must be 1..{len(SHAPES) * len(COLOURS_BGR)}")
    rng = np.random.default_rng(seed)
    img_dir, mask_dir = osp.join(out_dir, "images"), osp.join(out_dir, "masks")
    for folder in (img_dir, mask_dir):
        os.makedirs(folder, exist_ok=True)
    classes = [f"/m/syn{c:02d}" for c in range(n_classes)]
    data_list = []
    for i in range(n_images):
        width, height = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, 2))
        img = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        img = cv2.GaussianBlur(img, (5, 5), 0) // 2 + 64
        img_id = f"{i:016x}"
        mask_w, mask_h = max(8, round(width * mask_scale[0])), max(8, round(height * mask_scale[1]))
        instances = []
        for k in range(int(rng.integers(1, 4))):
            label = int(rng.integers(0, n_classes))
            ow, oh = (int(v) for v in rng.integers(min(width, height) // 5,
                                                    min(width, height) // 2, 2))
            x1, y1 = int(rng.integers(0, width - ow)), int(rng.integers(0, height - oh))
            full = np.zeros((height, width), np.uint8)
            shape = SHAPES[label % len(SHAPES)]
            if shape == "rectangle":
                full[y1:y1 + oh, x1:x1 + ow] = 1
            elif shape == "ellipse":
                cv2.ellipse(full, (x1 + ow // 2, y1 + oh // 2), (ow // 2, oh // 2), 0, 0, 360, 1, -1)
            else:
                pts = np.array([[x1, y1 + oh - 1], [x1 + ow - 1, y1 + oh - 1], [x1 + ow // 2, y1]],
                               np.int32)
                cv2.fillPoly(full, [pts], 1)
            img[full > 0] = COLOURS_BGR[label // len(SHAPES)]
            ys, xs = np.nonzero(full)
            # nearest at pixel centres, the convention LoadOIDAnnotations reads back with
            small = cv2.resize(full, (mask_w, mask_h), interpolation=cv2.INTER_NEAREST_EXACT) * 255
            mask_file = f"{img_id}_syn{label:02d}_{k}.png"
            cv2.imwrite(osp.join(mask_dir, mask_file), small)
            instances.append({"bbox": [float(xs.min()), float(ys.min()), float(xs.max() + 1),
                                       float(ys.max() + 1)],
                              "bbox_label": label, "mask_file": mask_file, "ignore_flag": 0})
        img_path = osp.join(img_dir, f"{img_id}.jpg")
        cv2.imwrite(img_path, img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        data_list.append({"img_id": img_id, "img_path": img_path, "width": width,
                          "height": height, "source": "train", "mask_dir": mask_dir,
                          "instances": instances})
    ann = {"metainfo": {"classes": classes, "names": [f"synthetic {c}" for c in range(n_classes)]},
           "data_list": data_list}
    atomic_pickle(osp.join(out_dir, "ann.pkl"), ann)
    return ann
