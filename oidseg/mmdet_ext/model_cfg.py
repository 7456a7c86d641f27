"""Model-config helpers shared by training (:mod:`oidseg.train`) and
inference (:mod:`oidseg.infer`)."""

from __future__ import annotations

from typing import Any


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
