# L3: Cascade Mask R-CNN, ResNeXt-101 64x4d with DCNv1 in c5 only,
# 275 leaf classes (SPEC section 5). 'DCN' in mmcv 2.x is DeformConv2dPack
# (DCNv1, the original's modulated=False, deformable_groups=1); mmdet's ResNeXt
# bottleneck passes its groups=64 to the DCN conv, as the original's
# dcn=dict(groups=64).
# Stages (config.yaml): LR x1 / x1/5 (skips stage 1's entries) / x1/50
# (oversampled list).
_base_ = './L1.py'
model = dict(
    backbone=dict(
        dcn=dict(type='DCN', deform_groups=1, fallback_on_stride=False),
        stage_with_dcn=(False, False, False, True)))
