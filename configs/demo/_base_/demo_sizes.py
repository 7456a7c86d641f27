# Demo size: how configs/demo/{L1,L2,L3,P1}.py shrink the full model config
# they inherit. Each demo config is the full one, changed in place here:
#
#     _base_ = ['../models/<M>.py', './_base_/demo_sizes.py']
#     _base_.pop('demo').shrink(_base_)
#
# so that a change to a full model reaches its demo twin by construction.
# (mmengine merges dicts but replaces lists, and forbids a key in two bases:
# the items of the head, sampler and pipeline lists are edited in place by
# `_shrink`, which travels in the one key `demo`, popped by the demo config.)
#
# Only sizes shrink; the architecture (Cascade Mask R-CNN, 3 stages,
# IoU 0.5/0.6/0.7, class-agnostic regression, 2-fc box head, 4-conv mask
# head, FPN 5 levels, anchors, DCN where the model has DCN) stays:
# - backbone: Bottleneck ResNet/ResNeXt of depth 14 (one block per stage),
#   base_channels 16 (stage outputs 64/128/256/512), ResNeXt 4 groups x 4,
#   random init: no frozen stage (the full configs freeze the pretrained stem
#   and first stage, frozen_stages=1);
# - FPN, RPN and heads 64 channels, box fc 256;
# - RPN 300 proposals in training and at test time, 64 RoI samples per stage;
# - images: every pipeline's sizes x 256/1333: long side 256, short side
#   123..184 (640..960), single scale 154 (800); cutout holes 12 x 2 px (64 x 8);
# - 2 images per iteration, base LR 0.02 for 2 images (random init on tiny
#   data needs the larger LR), warm-up 10 iterations (demo stages are short),
#   checkpoints every 50 and logs every 10 iterations, no loader workers.

def _shrink(cfg):
    """Shrink a full model config (the ConfigDict of the demo's bases) in
    place. The sizes are local names: a top-level name of this file would
    become a key of every demo config."""
    image_scale = 256 / 1333
    channels = 64
    proposals = 300
    images = 2
    warmup_iters = 10
    checkpoint_interval = 50
    log_interval = 10
    # full backbone type -> demo one (registered by oidseg.mmdet_ext)
    backbones = dict(
        ResNet=dict(type='DemoResNet'),
        ResNeXt=dict(type='DemoResNeXt', groups=4, base_width=4),
    )

    def small(size):
        """A pipeline size: a number, an (h, w) pair or a list of pairs."""
        if isinstance(size, (tuple, list)):
            return type(size)(small(s) for s in size)
        return round(size * image_scale)

    model = cfg.model
    model.backbone.update(depth=14, base_channels=16, init_cfg=None,
                          frozen_stages=-1,
                          **backbones[model.backbone.type])
    model.neck.update(in_channels=[64, 128, 256, 512], out_channels=channels)
    model.rpn_head.update(in_channels=channels, feat_channels=channels)
    roi = model.roi_head
    roi.bbox_roi_extractor.out_channels = channels
    roi.mask_roi_extractor.out_channels = channels
    for head in roi.bbox_head:
        head.update(in_channels=channels, fc_out_channels=256)
    roi.mask_head.update(in_channels=channels, conv_out_channels=channels)
    for stage in model.train_cfg.rcnn:
        stage.sampler.num = 64
    for rpn in (model.train_cfg.rpn_proposal, model.test_cfg.rpn):
        rpn.update(nms_pre=proposals, max_per_img=proposals)

    for key in ('train_scale_multiscale', 'train_scale_single',
                'cutout_max_px', 'cutout_hole_size'):
        if key in cfg:
            cfg[key] = small(cfg[key])
    pipelines = [*cfg.train_pipelines.values(), cfg.train_pipeline,
                 cfg.train_dataloader.dataset.pipeline, cfg.test_pipeline]
    steps = {id(step): step for pipeline in pipelines for step in pipeline}
    for step in steps.values():  # each once, also where pipelines share one
        for key in ('scale', 'scales', 'max_size', 'hole_size'):
            if key in step:
                step[key] = small(step[key])

    cfg.update(images_per_gpu=images, base_images_per_iter=images,
               base_lr=0.02, warmup_iters=warmup_iters,
               checkpoint_interval=checkpoint_interval)
    cfg.train_dataloader.update(batch_size=images, num_workers=0,
                                persistent_workers=False)
    cfg.optim_wrapper.optimizer.lr = cfg.base_lr
    for scheduler in cfg.param_scheduler:
        if scheduler.type == 'LinearLR':
            scheduler.end = warmup_iters
    cfg.default_hooks.logger.interval = log_interval
    cfg.default_hooks.checkpoint.interval = checkpoint_interval
    cfg.log_processor.window_size = log_interval


demo = dict(shrink=_shrink)
