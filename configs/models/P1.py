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

# Stages 2/3 (--aug photometric): the original's _parent_lr5 / _parent_lr50
# configs list img_scale=[(1333, 640), (1333, 960)] WITHOUT
# multiscale_mode='range', so the 2019 code picked ONE of the two scales per
# image (short side 640 or 960), not a uniform range as the leaf models'
# 'multiscale': RandomChoiceResize instead of RandomResize.
train_pipelines = dict(photometric=[
    dict(type='RandomChoiceResize', scales=step['scale'], keep_ratio=step['keep_ratio'])
    if step['type'] == 'RandomResize' else step
    for step in _base_.train_pipelines.photometric])
