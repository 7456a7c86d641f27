"""Synthetic checkpoints in the exact layout of the original's released files
(mmdetection 0.6.0 fork, 2019), made from one of our models' state dicts.

Written from the original's code, independently of :mod:`oidseg.released`
(a test of the converter must not share its mapping):

- ``mmdet/models/detectors/cascade_rcnn.py``: ``self.bbox_head``,
  ``self.mask_head`` (and the parameter-free roi extractors) are top-level
  ``nn.ModuleList`` s -> keys ``bbox_head.{i}.*``, ``mask_head.{i}.*``;
- ``bbox_heads/convfc_bbox_head.py`` (``SharedFCBBoxHead``, num_classes=276
  or 24 in the configs): ``fc_cls`` has C + 1 outputs, background = 0
  (``core/post_processing/bbox_nms.py`` loops classes from 1);
- ``mask_heads/fcn_mask_head.py``: ``conv_logits`` has num_classes = C + 1
  channels, ``get_seg_masks`` reads channel ``label + 1``;
- ``backbones/resnet.py`` / ``resnext.py`` with ``dcn=dict(modulated=False)``:
  ``self.conv2_offset = nn.Conv2d(planes, deformable_groups * 18, 3, ...)``
  (with bias) beside ``self.conv2 = DeformConv(..., groups=groups, bias=False)``
  -> ``layerN.M.conv2_offset.{weight,bias}``;
- ``tools/train.py``: ``meta = dict(mmdet_version, config=cfg.text,
  CLASSES=train_dataset.CLASSES)``; mmcv 0.2's ``save_checkpoint`` adds
  ``mmcv_version``, ``time``, the runner ``epoch`` and ``iter``; PyTorch 1.1
  wrote the legacy (non-zip) serialization.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path
from typing import Mapping, Sequence

import torch

MMDET_VERSION_2019 = "0.6.0+084a389"

_BACKBONES = {
    "L1": "dict(type='ResNeXt', depth=101, groups=64, base_width=4, num_stages=4, "
          "out_indices=(0, 1, 2, 3), frozen_stages=1, style='pytorch')",
    "L2": "dict(type='ResNet', depth=101, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=1, "
          "style='pytorch', dcn=dict(modulated=False, deformable_groups=1, fallback_on_stride=False), "
          "stage_with_dcn=(False, True, True, True))",
    "L3": "dict(type='ResNeXt', depth=101, groups=64, base_width=4, num_stages=4, "
          "out_indices=(0, 1, 2, 3), frozen_stages=1, style='pytorch', "
          "dcn=dict(modulated=False, groups=64, deformable_groups=1, fallback_on_stride=False), "
          "stage_with_dcn=(False, False, False, True))",
}
_BACKBONES["P1"] = _BACKBONES["L1"]


def config_text_2019(model: str, n_classes: int) -> str:
    """A 2019-style config text (the part mmdet's upgrade_model_version.py
    parses: model.rpn_head and a list of bbox heads)."""
    stds = ["[0.1, 0.1, 0.2, 0.2]", "[0.05, 0.05, 0.1, 0.1]", "[0.033, 0.033, 0.067, 0.067]"]
    heads = ",\n        ".join(
        f"dict(type='SharedFCBBoxHead', num_fcs=2, in_channels=256, fc_out_channels=1024, roi_feat_size=7, "
        f"num_classes={n_classes + 1}, target_means=[0., 0., 0., 0.], target_stds={s}, reg_class_agnostic=True)"
        for s in stds)
    return f"""# model settings
model = dict(
    type='CascadeRCNN',
    num_stages=3,
    pretrained=None,
    backbone={_BACKBONES[model]},
    neck=dict(type='FPN', in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5),
    rpn_head=dict(type='RPNHead', in_channels=256, feat_channels=256, anchor_scales=[8],
                  anchor_ratios=[0.5, 1.0, 2.0], anchor_strides=[4, 8, 16, 32, 64],
                  target_means=[.0, .0, .0, .0], target_stds=[1.0, 1.0, 1.0, 1.0]),
    bbox_roi_extractor=dict(type='SingleRoIExtractor', roi_layer=dict(type='RoIAlign', out_size=7, sample_num=2),
                            out_channels=256, featmap_strides=[4, 8, 16, 32]),
    bbox_head=[
        {heads}
    ],
    mask_roi_extractor=dict(type='SingleRoIExtractor', roi_layer=dict(type='RoIAlign', out_size=14, sample_num=2),
                            out_channels=256, featmap_strides=[4, 8, 16, 32]),
    mask_head=dict(type='FCNMaskHead', num_convs=4, in_channels=256, conv_out_channels=256,
                   num_classes={n_classes + 1}))
dataset_type = 'OIDSegDataset'
"""


def state_2019(state: Mapping[str, torch.Tensor], our_classes: Sequence[str], original_classes: Sequence[str],
               seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """Our mmdet 3 state dict -> the 2019 state dict of the same weights,
    classes in ``original_classes`` order. The unused background channel of
    the 2019 mask logits gets random values (a trained file has some)."""
    ours = {c: i for i, c in enumerate(our_classes)}
    order = torch.tensor([ours[c] for c in original_classes])  # 2019 class i = our class order[i]
    gen = torch.Generator().manual_seed(seed)
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state.items():
        key19 = key.removeprefix("roi_head.")
        key19 = re.sub(r"\.conv2\.conv_offset\.", ".conv2_offset.", key19)
        if re.fullmatch(r"bbox_head\.\d\.fc_cls\.(weight|bias)", key19):
            # ours: rows 0..C-1 classes (our order), row C background
            value = torch.cat([value[-1:], value[:-1][order]])
        elif re.fullmatch(r"mask_head\.\d\.conv_logits\.(weight|bias)", key19):
            background = torch.randn(value[:1].shape, generator=gen)
            value = torch.cat([background, value[order]])
        out[key19] = value
    return out


def write_2019_checkpoint(path: str | Path, state: Mapping[str, torch.Tensor], model: str,
                          our_classes: Sequence[str], original_classes: Sequence[str],
                          with_classes: bool = True, meta_classes: Sequence[str] | None = None) -> Path:
    """Write a checkpoint in the released files' layout and serialization
    (``meta_classes``: another meta.CLASSES than the tensors' order)."""
    meta = dict(mmdet_version=MMDET_VERSION_2019, config=config_text_2019(model, len(our_classes)))
    if with_classes:
        meta["CLASSES"] = tuple(original_classes if meta_classes is None else meta_classes)
    meta.update(mmcv_version="0.2.10", time="Sat Oct 19 07:12:01 2019", epoch=1, iter=12000)
    ckpt = {"meta": meta, "state_dict": state_2019(state, our_classes, original_classes)}
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    return Path(path)


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Make a freshly built model's outputs depend on every class row and
    every offset: class biases N(0, 1) (else all classes score alike),
    non-zero DCN offsets (mmcv initialises them to 0), BN statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if not p.is_floating_point():
                continue
            if re.search(r"(fc_cls|conv_logits)\.bias$", name):
                p.copy_(torch.randn(p.shape, generator=gen))
            elif re.search(r"(fc_cls|conv_logits)\.weight$", name):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
            elif "conv_offset" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * (0.5 if name.endswith("bias") else 0.01))
            elif name.endswith("running_mean"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            elif name.endswith("running_var"):
                p.copy_(torch.rand(p.shape, generator=gen) * 0.5 + 0.75)
    return model
