# Demo-size overrides shared by configs/demo/{L1,L2,L3,P1}.py.
#
# Only sizes shrink; the architecture (Cascade Mask R-CNN, 3 stages,
# IoU 0.5/0.6/0.7, class-agnostic regression, 2-fc box head, 4-conv mask
# head, FPN 5 levels, anchors, DCN where the model has DCN) stays:
# - backbone: Bottleneck ResNet/ResNeXt of depth 14 (one block per stage),
#   base_channels 16 (stage outputs 64/128/256/512), ResNeXt 4 groups x 4;
# - FPN, RPN and heads 64 channels, box fc 256;
# - RPN 300 proposals in training and at test time, 64 RoI samples per stage;
# - images: long side 256 (= 1333 x 0.192); short side 123..184 (640..960 x
#   0.192), single scale 154; cutout at most 12 px;
# - 2 images per iteration, base LR 0.02 for 2 images (random init on tiny
#   data needs the larger LR), warm-up 10 iterations (demo stages are short).
# The demo configs pull these in with {{_base_.demo_...}} because mmengine
# forbids the same key in two bases and replaces (does not merge) lists.

demo_scale = 256 / 1333
demo_channels = 64
demo_fc = 256
demo_proposals = 300
demo_samples = 64

_stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
         [0.033, 0.033, 0.067, 0.067]]


def _box_head(stds, n_classes):
    return dict(
        type='Shared2FCBBoxHead',
        in_channels=demo_channels,
        fc_out_channels=demo_fc,
        roi_feat_size=7,
        num_classes=n_classes,
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[0., 0., 0., 0.],
            target_stds=stds),
        reg_class_agnostic=True,
        loss_cls=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0))


def _rcnn_train(iou):
    return dict(
        assigner=dict(
            type='MaxIoUAssigner',
            pos_iou_thr=iou,
            neg_iou_thr=iou,
            min_pos_iou=iou,
            match_low_quality=False,
            ignore_iof_thr=-1),
        sampler=dict(
            type='RandomSampler',
            num=demo_samples,
            pos_fraction=0.25,
            neg_pos_ub=-1,
            add_gt_as_proposals=True),
        mask_size=28,
        pos_weight=-1,
        debug=False)


def _heads_and_sizes(n_classes):
    """Everything of the model but the backbone type, demo size."""
    return dict(
        # random init: no stage is frozen (the full configs freeze the
        # pretrained stem and first stage, frozen_stages=1)
        backbone=dict(depth=14, base_channels=16, init_cfg=None, frozen_stages=-1),
        neck=dict(in_channels=[64, 128, 256, 512], out_channels=demo_channels),
        rpn_head=dict(in_channels=demo_channels, feat_channels=demo_channels),
        roi_head=dict(
            bbox_roi_extractor=dict(out_channels=demo_channels),
            bbox_head=[_box_head(stds, n_classes) for stds in _stds],
            mask_roi_extractor=dict(out_channels=demo_channels),
            mask_head=dict(in_channels=demo_channels,
                           conv_out_channels=demo_channels,
                           num_classes=n_classes)),
        train_cfg=dict(
            rpn_proposal=dict(nms_pre=demo_proposals,
                              max_per_img=demo_proposals),
            rcnn=[_rcnn_train(iou) for iou in (0.5, 0.6, 0.7)]),
        test_cfg=dict(
            rpn=dict(nms_pre=demo_proposals, max_per_img=demo_proposals)))


demo_model_resnet = _heads_and_sizes(275)
demo_model_resnet['backbone']['type'] = 'DemoResNet'

demo_model_resnext = _heads_and_sizes(275)
demo_model_resnext['backbone'].update(type='DemoResNeXt', groups=4,
                                      base_width=4)

demo_model_resnext_parent = _heads_and_sizes(23)
demo_model_resnext_parent['backbone'].update(type='DemoResNeXt', groups=4,
                                             base_width=4)

demo_train_scale_multiscale = [(256, round(640 * demo_scale)),
                               (256, round(960 * demo_scale))]
demo_train_scale_single = (256, round(800 * demo_scale))
demo_cutout_max_px = round(64 * demo_scale)

_load = [
    dict(type='LoadImageFromFile', color_type='color_ignore_orientation',
         backend_args=None),
    dict(type='LoadOIDAnnotations', with_bbox=True, with_mask=True),
]
_pack = [dict(type='RandomFlip', prob=0.5), dict(type='PackDetInputs')]
_photometric = [
    dict(type='RandomCutOut', prob=0.5, max_size=demo_cutout_max_px),
    dict(type='RandomBrightnessContrast', prob=0.5, brightness=0.3,
         contrast=0.3),
    dict(type='RandomJPEG', prob=0.5, quality_range=(80, 99)),
]
_multiscale = [dict(type='RandomResize', scale=demo_train_scale_multiscale,
                    keep_ratio=True)]
_single = [dict(type='Resize', scale=demo_train_scale_single, keep_ratio=True)]

demo_train_pipelines = dict(
    multiscale=_load + _multiscale + _pack,
    single=_load + _single + _pack,
    photometric=_load + _photometric + _multiscale + _pack,
)
demo_test_pipeline = [
    dict(type='LoadImageFromFile', color_type='color_ignore_orientation',
         backend_args=None),
    dict(type='Resize', scale=demo_train_scale_single, keep_ratio=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor')),
]

demo_images_per_gpu = 2
demo_base_lr = 0.02
demo_base_images_per_iter = 2
demo_warmup_iters = 10
demo_checkpoint_interval = 50

del _stds, _load, _pack, _photometric, _multiscale, _single
