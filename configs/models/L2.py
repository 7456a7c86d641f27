# L2: Cascade Mask R-CNN, ResNet-101 with DCNv2 (modulated deformable
# convolution) in stages c3-c5, 275 leaf classes (SPEC section 5), as mmdet's
# dcn/cascade-mask-rcnn_r101-dconv-c3-c5_fpn_1x_coco.py.
# Stages (config.yaml): LR x1 / x1/3 / x1/15.
_base_ = [
    '../_base_/cascade_mask_rcnn_fpn.py',
    '../_base_/oid_instance.py',
    '../_base_/schedule_sgd_iter.py',
]
model = dict(
    backbone=dict(
        # 'DCN' in mmcv 2.x is ModulatedDeformConv2dPack (DCNv2)
        dcn=dict(type='DCN', deform_groups=1, fallback_on_stride=False),
        stage_with_dcn=(False, True, True, True)))
