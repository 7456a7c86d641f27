# L1: Cascade Mask R-CNN, ResNeXt-101 64x4d, 275 leaf classes (SPEC section 5).
# Stages (config.yaml): LR x1 / x1/3 / x1/15.
_base_ = [
    '../_base_/cascade_mask_rcnn_fpn.py',
    '../_base_/oid_instance.py',
    '../_base_/schedule_sgd_iter.py',
]
# The base model is ResNet-101 with its stages and norms: L1 swaps in ResNeXt.
model = dict(backbone=dict(type='ResNeXt', groups=64, base_width=4))
