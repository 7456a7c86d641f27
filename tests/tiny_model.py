"""A tiny Cascade Mask R-CNN config for tests and CPU benchmarks
(``bench/bench_infer.py`` imports it from here)."""

from __future__ import annotations

from typing import Any


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
