# Cascade Mask R-CNN with FPN, full size (SPEC section 5).
#
# 3 cascade stages (IoU 0.5 / 0.6 / 0.7, loss weights 1 / 0.5 / 0.25),
# class-agnostic box regression, shared 2-fc box head of 1024, RoIAlign 7
# (boxes) and 14 (masks), FCN mask head with 4 convs and 28x28 targets,
# FPN 256 channels / 5 levels, anchors scale 8, ratios 0.5/1/2, strides 4..64.
# RPN: 2000 proposals in training; 1000 proposals with NMS 0.7 at test time.
#
# The backbone is set by each model config (configs/models/*.py).
# num_classes is the leaf count (275); scripts/train.py overrides every
# bbox/mask head's num_classes from the training pickle's class list.
# (mmengine replaces lists instead of merging them: a config that changes the
# class count or the head widths replaces the whole bbox_head list, e.g. with
# bbox_heads_parent below.)

leaf_num_classes = 275
parent_num_classes = 23
num_classes = leaf_num_classes
fpn_channels = 256
box_fc_channels = 1024
rpn_train_proposals = 2000
rpn_test_proposals = 1000
rcnn_samples_per_img = 512
cascade_iou = [0.5, 0.6, 0.7]
cascade_target_stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                       [0.033, 0.033, 0.067, 0.067]]


def _box_head(stds, n_classes):
    return dict(
        type='Shared2FCBBoxHead',
        in_channels=fpn_channels,
        fc_out_channels=box_fc_channels,
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
            num=rcnn_samples_per_img,
            pos_fraction=0.25,
            neg_pos_ub=-1,
            add_gt_as_proposals=True),
        mask_size=28,
        pos_weight=-1,
        debug=False)


bbox_heads_leaf = [_box_head(stds, leaf_num_classes)
                   for stds in cascade_target_stds]
bbox_heads_parent = [_box_head(stds, parent_num_classes)
                     for stds in cascade_target_stds]

model = dict(
    type='CascadeRCNN',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        # ImageNet normalisation (RGB order), pad to a multiple of 32
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_mask=True,
        pad_size_divisor=32),
    backbone=dict(
        type='ResNet',
        depth=101,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        style='pytorch',
        # No weight downloads: scripts/train.py --pretrained PATH sets
        # dict(type='Pretrained', checkpoint=PATH) for the ImageNet weights.
        init_cfg=None),
    neck=dict(
        type='FPN',
        in_channels=[256, 512, 1024, 2048],
        out_channels=fpn_channels,
        num_outs=5),
    rpn_head=dict(
        type='RPNHead',
        in_channels=fpn_channels,
        feat_channels=fpn_channels,
        anchor_generator=dict(
            type='AnchorGenerator',
            scales=[8],
            ratios=[0.5, 1.0, 2.0],
            strides=[4, 8, 16, 32, 64]),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[.0, .0, .0, .0],
            target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(
            type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
        loss_bbox=dict(type='SmoothL1Loss', beta=1.0 / 9.0, loss_weight=1.0)),
    roi_head=dict(
        type='CascadeRoIHead',
        num_stages=3,
        stage_loss_weights=[1, 0.5, 0.25],
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
            out_channels=fpn_channels,
            featmap_strides=[4, 8, 16, 32]),
        bbox_head=bbox_heads_leaf,
        mask_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0),
            out_channels=fpn_channels,
            featmap_strides=[4, 8, 16, 32]),
        mask_head=dict(
            type='FCNMaskHead',
            num_convs=4,
            in_channels=fpn_channels,
            conv_out_channels=fpn_channels,
            num_classes=num_classes,
            loss_mask=dict(
                type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))),
    train_cfg=dict(
        rpn=dict(
            assigner=dict(
                type='MaxIoUAssigner',
                pos_iou_thr=0.7,
                neg_iou_thr=0.3,
                min_pos_iou=0.3,
                match_low_quality=True,
                ignore_iof_thr=-1),
            sampler=dict(
                type='RandomSampler',
                num=256,
                pos_fraction=0.5,
                neg_pos_ub=-1,
                add_gt_as_proposals=False),
            allowed_border=0,
            pos_weight=-1,
            debug=False),
        rpn_proposal=dict(
            nms_pre=rpn_train_proposals,
            max_per_img=rpn_train_proposals,
            nms=dict(type='nms', iou_threshold=0.7),
            min_bbox_size=0),
        rcnn=[_rcnn_train(iou) for iou in cascade_iou]),
    test_cfg=dict(
        rpn=dict(
            nms_pre=rpn_test_proposals,
            max_per_img=rpn_test_proposals,
            nms=dict(type='nms', iou_threshold=0.7),
            min_bbox_size=0),
        rcnn=dict(
            # SPEC section 6: per class score > 0, NMS 0.5, top 120 per image
            score_thr=0.0,
            nms=dict(type='nms', iou_threshold=0.5),
            max_per_img=120,
            mask_thr_binary=0.5)))

del _box_head, _rcnn_train
