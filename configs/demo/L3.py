# Demo-size L3: configs/models/L3.py with the sizes of
# configs/demo/_base_/demo_sizes.py; backbone ResNeXt (depth 14, 4 groups x 4) with DCNv2 in c5.
_base_ = ['../models/L3.py', './_base_/demo_sizes.py']

model = {{_base_.demo_model_resnext}}

train_pipelines = {{_base_.demo_train_pipelines}}
train_pipeline = {{_base_.demo_train_pipelines.multiscale}}
test_pipeline = {{_base_.demo_test_pipeline}}
train_scale_multiscale = {{_base_.demo_train_scale_multiscale}}
train_scale_single = {{_base_.demo_train_scale_single}}
cutout_max_px = {{_base_.demo_cutout_max_px}}

images_per_gpu = {{_base_.demo_images_per_gpu}}
base_lr = {{_base_.demo_base_lr}}
base_images_per_iter = {{_base_.demo_base_images_per_iter}}
warmup_iters = {{_base_.demo_warmup_iters}}
checkpoint_interval = {{_base_.demo_checkpoint_interval}}

train_dataloader = dict(
    batch_size=images_per_gpu,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(pipeline=train_pipeline))
optim_wrapper = dict(optimizer=dict(lr=base_lr))
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False,
         begin=0, end=warmup_iters),
]
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=checkpoint_interval))
log_processor = dict(window_size=10)
