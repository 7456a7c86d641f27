# P1: Cascade Mask R-CNN, ResNeXt-101 64x4d, 23 parent classes
# (SPEC section 5). Stage 1 trains single scale 1333x800; stages 2/3
# multiscale + image-only augmentation (--aug photometric).
# Stages (config.yaml): LR x1 / x1/5 / x1/50.
_base_ = './L1.py'

num_classes = 23
model = dict(
    roi_head=dict(
        bbox_head={{_base_.bbox_heads_parent}},
        mask_head=dict(num_classes=num_classes)))

train_pipeline = {{_base_.train_pipelines.single}}
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
