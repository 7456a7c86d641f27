# L1: Cascade Mask R-CNN, ResNeXt-101 64x4d, 275 leaf classes (SPEC section 5).
# Stages (config.yaml): LR x1 / x1/3 / x1/15.
_base_ = [
    '../_base_/cascade_mask_rcnn_fpn.py',
    '../_base_/oid_instance.py',
    '../_base_/schedule_sgd_iter.py',
]
model = dict(
    backbone=dict(
        type='ResNeXt',
        depth=101,
        groups=64,
        base_width=4,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        style='pytorch',
        init_cfg=None))
