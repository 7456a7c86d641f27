# Optimiser, LR schedule and runtime (SPEC section 5).
#
# SGD momentum 0.9, weight decay 1e-4, gradient clip 35, base LR 0.005 for
# 4 images per iteration, linear warm-up of 500 iterations from 1/3, then
# constant. scripts/train.py sets max_iters, lr = base_lr x lr_factor x
# (images per iteration / base_images_per_iter) and the warm-up end.

base_lr = 0.005
warmup_iters = 500
warmup_ratio = 1.0 / 3
max_iters = 1000
checkpoint_interval = 5000

# IterBasedTrainLoop whose resume moves the OrderedListSampler forward
train_cfg = dict(type='OrderedIterBasedTrainLoop', max_iters=max_iters,
                 val_interval=10 ** 12)

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=base_lr, momentum=0.9, weight_decay=1e-4),
    clip_grad=dict(max_norm=35, norm_type=2))

param_scheduler = [
    dict(type='LinearLR', start_factor=warmup_ratio, by_epoch=False,
         begin=0, end=warmup_iters),
]

auto_scale_lr = dict(enable=False, base_batch_size=4)

default_scope = 'mmdet'
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=checkpoint_interval,
                    by_epoch=False, max_keep_ckpts=2, save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
# scripts/train.py adds JsonLinesLossHook (--log-jsonl) to custom_hooks
custom_hooks = []

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
log_processor = dict(type='LogProcessor', window_size=20, by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
