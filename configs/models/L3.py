# L3: Cascade Mask R-CNN, ResNeXt-101 64x4d with DCNv2 in c5 only,
# 275 leaf classes (SPEC section 5).
# Stages (config.yaml): LR x1 / x1/5 (skips stage 1's entries) / x1/50
# (oversampled list).
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
        dcn=dict(type='DCN', deform_groups=1, fallback_on_stride=False),
        stage_with_dcn=(False, False, False, True),
        init_cfg=None))
