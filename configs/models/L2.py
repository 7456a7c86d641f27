# L2: Cascade Mask R-CNN, ResNet-101 with DCNv1 (deformable convolution, not
# modulated) in stages c3-c5, 275 leaf classes (SPEC section 5), as mmdet's
# dcn/cascade-mask-rcnn_r101-dconv-c3-c5_fpn_1x_coco.py and the original's
# dconv_c3-c5 configs (dcn=dict(modulated=False, deformable_groups=1)).
# Stages (config.yaml): LR x1 on the leaf list / x1/3 and x1/15 on the
# V5-test-oversampled list (stage 3 skips stage 2's 64k x 4 = 256,000 entries).
_base_ = [
    '../_base_/cascade_mask_rcnn_fpn.py',
    '../_base_/oid_instance.py',
    '../_base_/schedule_sgd_iter.py',
]
model = dict(
    backbone=dict(
        # 'DCN' in mmcv 2.x is DeformConv2dPack (DCNv1, the original's
        # modulated=False); 'DCNv2' would be ModulatedDeformConv2dPack
        dcn=dict(type='DCN', deform_groups=1, fallback_on_stride=False),
        stage_with_dcn=(False, True, True, True)))
