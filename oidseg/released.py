"""Convert the original's released checkpoints (mmdetection 0.6.0, 2019) to
our checkpoint format (issue 10).

A released file (``tools/train.py`` + mmcv 0.2 ``save_checkpoint`` of the
original) is ``{"state_dict", "meta": {"mmdet_version", "config",
"CLASSES", ...}, "optimizer"?}``: plain tensors, strings, tuples and
numbers, so it is read with ``torch.load(weights_only=True)``.

Differences from our mmdet 3.3 models, all handled here:

- the cascade heads are top-level ModuleLists (``bbox_head.{i}.*``,
  ``mask_head.{i}.*``, the parameter-free ``bbox_roi_extractor`` /
  ``mask_roi_extractor``); mmdet 3 keeps them under ``roi_head.``;
- the softmax classifiers ``fc_cls`` have C + 1 outputs with the background
  at index 0 (the 2019 ``multiclass_nms`` skips column 0); mmdet 3 puts it
  last;
- the class-specific mask logits ``conv_logits`` have C + 1 channels, channel
  0 unused (the 2019 ``FCNMaskHead.get_seg_masks`` reads channel label + 1);
  mmdet 3 has C;
- deformable convolutions (DCNv1) keep their offset conv beside the conv,
  ``layerN.M.conv2_offset.{weight,bias}``; mmcv 2's ``DeformConv2dPack``
  owns it as ``layerN.M.conv2.conv_offset.*``;
- the class order is the original's (``meta.CLASSES``; fallback
  ``configs/released/original_classes.json``): class rows and channels are
  permuted into ours (``results/annotations/classes.json``).

The result is checked key by key and shape by shape against the model of
the given config (built on the ``meta`` device: no memory, no init), and
written atomically as ``{"meta": {"dataset_meta": {"classes": [...]}, ...},
"state_dict"}`` (``oidseg.train.save_final``'s format).
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from oidseg.checkpoints import check_finite
from oidseg.errors import InputError, atomic_path

REPO = Path(__file__).resolve().parents[1]
ORIGINAL_CLASSES_JSON = REPO / "configs" / "released" / "original_classes.json"

# 2019 top-level module -> mmdet 3 location
_HEAD_MODULES = ("bbox_head", "mask_head", "bbox_roi_extractor", "mask_roi_extractor")
_CLS_KEY = re.compile(r"^roi_head\.bbox_head\.\d+\.fc_cls\.(weight|bias)$")
_MASK_KEY = re.compile(r"^roi_head\.mask_head\.\d+\.conv_logits\.(weight|bias)$")
_OFFSET_KEY = re.compile(r"^(backbone\.layer\d+\.\d+\.conv2)_offset\.(weight|bias)$")
# the 2019 layout's signature key (a cascade head at the top level)
_SIGNATURE = "bbox_head.0.fc_cls.weight"


@dataclass(frozen=True)
class Released:
    """A released checkpoint's weights and meta data."""

    path: Path
    state_dict: "OrderedDict[str, torch.Tensor]"
    meta: dict


def load_released(path: str | Path) -> Released:
    """Read a released 2019 checkpoint (``weights_only=True``); a missing,
    truncated or foreign file raises :class:`InputError` naming it."""
    from oidseg.checkpoints import load_checkpoint

    path = Path(path)
    ckpt = load_checkpoint(path, kind="released checkpoint")  # weights_only=True
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), Mapping):
        raise InputError(f"{path}: released checkpoint has no 'state_dict'")
    state = OrderedDict((str(k).removeprefix("module."), v) for k, v in ckpt["state_dict"].items())
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise InputError(f"{path}: state_dict entries are not tensors: {bad[:5]}")
    if _SIGNATURE not in state:
        hint = ("; it looks like an mmdet 2/3 checkpoint (roi_head.*): use models.<M>.checkpoint"
                if f"roi_head.{_SIGNATURE}" in state else "")
        raise InputError(f"{path}: not a 2019 Cascade R-CNN checkpoint (no '{_SIGNATURE}'){hint}")
    meta = ckpt.get("meta") or {}
    if not isinstance(meta, dict):
        raise InputError(f"{path}: meta is a {type(meta).__name__}, not a dict")
    check_finite(state, path, kind="released checkpoint")
    return Released(path, state, meta)


def original_classes(kind: str, fallback_json: str | Path = ORIGINAL_CLASSES_JSON) -> list[str]:
    """The original's class order of ``kind`` ('leaf' or 'parent')."""
    fallback_json = Path(fallback_json)
    try:
        data = json.loads(fallback_json.read_text())
        return [str(c) for c in data[kind]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{fallback_json}: no '{kind}' class list ({exc})") from exc


def source_classes(released: Released, kind: str, fallback_json: str | Path = ORIGINAL_CLASSES_JSON) -> tuple[list[str], str]:
    """The released model's class order (its ``meta.CLASSES``; without it,
    the original's order of ``kind``) and where it came from."""
    classes = released.meta.get("CLASSES")
    if classes:
        return [str(c) for c in classes], "meta.CLASSES"
    return original_classes(kind, fallback_json), str(fallback_json)


def class_permutation(src: Sequence[str], dst: Sequence[str], where: str) -> np.ndarray:
    """``perm[j]`` = the source index of our class ``dst[j]``; the two lists
    must hold the same classes once each."""
    src_pos = {c: i for i, c in enumerate(src)}
    if len(src_pos) != len(src):
        raise InputError(f"{where}: the checkpoint's class list repeats classes")
    missing = [c for c in dst if c not in src_pos]
    extra = sorted(set(src) - set(dst))
    if missing or extra or len(src) != len(dst):
        raise InputError(
            f"{where}: the checkpoint's {len(src)} classes are not the model's {len(dst)} classes "
            f"(missing {missing[:5]}, not in the model {extra[:5]})")
    return np.array([src_pos[c] for c in dst], dtype=np.int64)


def rename_key(key: str) -> str:
    """2019 key -> mmdet 3 key (heads under ``roi_head.``, DCN offsets
    inside the deformable conv)."""
    head = key.split(".", 1)[0]
    if head in _HEAD_MODULES:
        return f"roi_head.{key}"
    m = _OFFSET_KEY.match(key)
    if m:
        return f"{m.group(1)}.conv_offset.{m.group(2)}"
    return key


def _foreground_rows(value: torch.Tensor, perm: np.ndarray, key: str, where: str) -> torch.Tensor:
    """Rows 1..C of a (C + 1)-row 2019 tensor (background row 0) in our order."""
    n = len(perm)
    if value.shape[0] != n + 1:
        raise InputError(f"{where}: {key} has {value.shape[0]} outputs, expected {n + 1} "
                         f"({n} classes + background)")
    return value[torch.from_numpy(perm + 1)]


def convert_state_dict(state: Mapping[str, torch.Tensor], perm: np.ndarray, where: str) -> "OrderedDict[str, torch.Tensor]":
    """Rename the keys, move the classifier background from first to last,
    drop the mask background channel, permute class rows into our order.
    Other tensors are passed through (not copied)."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state.items():
        new = rename_key(key)
        if new in out:
            raise InputError(f"{where}: {key} and another key both map to {new}")
        if _CLS_KEY.match(new):
            value = torch.cat([_foreground_rows(value, perm, key, where), value[:1]])
        elif _MASK_KEY.match(new):
            value = _foreground_rows(value, perm, key, where).contiguous()
        out[new] = value
    return out


def expected_state(config: str | Path, num_classes: int) -> "OrderedDict[str, tuple[torch.Size, torch.dtype]]":
    """Shape and dtype of every state-dict entry of the model of ``config``
    with ``num_classes`` classes (built on the meta device)."""
    from oidseg.infer import build_model_from_config

    with torch.device("meta"):
        model = build_model_from_config(config, num_classes)
    return OrderedDict((k, (v.shape, v.dtype)) for k, v in model.state_dict().items())


def check_fits(state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[torch.Size, torch.dtype]],
               where: str, config: str | Path) -> "OrderedDict[str, torch.Tensor]":
    """The converted weights in the model's key order; unknown keys, missing
    keys (other than BatchNorm's ``num_batches_tracked`` counters, filled
    with 0: they do not affect inference) and shape mismatches raise
    :class:`InputError`."""
    unknown = [k for k in state if k not in expected]
    missing = [k for k in expected if k not in state and not k.endswith(".num_batches_tracked")]
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(s)}" for k, (s, _) in expected.items()
              if k in state and tuple(state[k].shape) != tuple(s)]
    if unknown or missing or shapes:
        parts = []
        if unknown:
            parts.append(f"{len(unknown)} unknown keys {unknown[:5]}")
        if missing:
            parts.append(f"{len(missing)} missing keys {missing[:5]}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches {shapes[:5]}")
        raise InputError(f"{where}: weights do not fit {config} ({'; '.join(parts)}); "
                         "is it the released file of this model?")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, (_, dtype) in expected.items():
        value = state.get(k)
        out[k] = value if value is not None else torch.zeros((), dtype=dtype)
    return out


def our_classes(classes_json: str | Path, kind: str) -> list[str]:
    """Our class order of ``kind`` from ``results/annotations/classes.json``."""
    classes_json = Path(classes_json)
    try:
        data = json.loads(classes_json.read_text())
        return [str(c) for c in data[f"{kind}_classes"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{classes_json}: no '{kind}_classes' list ({exc})") from exc


def convert_released(src: str | Path, out: str | Path, config: str | Path, classes: Sequence[str], kind: str,
                     fallback_json: str | Path = ORIGINAL_CLASSES_JSON) -> dict:
    """Convert the released checkpoint ``src`` for the model of ``config``
    with our class list ``classes`` (of ``kind``) and write ``out``
    atomically. Returns a summary (for the log)."""
    import mmdet

    released = load_released(src)
    where = str(released.path)
    src_classes, classes_from = source_classes(released, kind, fallback_json)
    perm = class_permutation(src_classes, classes, where)
    converted = convert_state_dict(released.state_dict, perm, where)
    state = check_fits(converted, expected_state(config, len(classes)), where, config)
    meta = released.meta
    checkpoint = {
        "meta": {
            "dataset_meta": {"classes": list(classes)},
            "mmdet_version": mmdet.__version__,
            "config": Path(config).read_text(),
            "released": {
                "file": released.path.name,
                "mmdet_version": str(meta.get("mmdet_version", "")),
                "classes_from": classes_from,
            },
        },
        "state_dict": state,
    }
    check_finite(state, out, kind="converted checkpoint")
    with atomic_path(out) as tmp:
        torch.save(checkpoint, tmp)
    return {
        "file": where,
        "tensors": len(state),
        "parameters": int(sum(v.numel() for v in state.values())),
        "classes": len(classes),
        "classes_from": classes_from,
        "renamed_offsets": sum(1 for k in released.state_dict if _OFFSET_KEY.match(k)),
        "filled_num_batches_tracked": sum(1 for k in state if k not in converted),
    }
