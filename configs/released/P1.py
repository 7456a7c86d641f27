# P1 for the original's released weights parent_A_lr50_ep1_it8000.pth
# (ResNeXt-101 64x4d, 23 parent classes;
# 2019 config cascade_mask_rcnn_x101_64x4d_fpn_1x_colab_parent*.py).
_base_ = '../models/P1.py'

# The 2019 conventions of the original's mmdetection 0.6.0 fork, on the
# architecture of configs/models/P1.py (key names and shapes unchanged, so the converted
# released weights load strictly): oidseg/mmdet_ext/legacy.py.
#  - anchors centred at (stride - 1) / 2 with "+1" sizes, rounded
#    (LegacyAnchorGenerator, center_offset=0.5);
#  - "+1" box coding, decoded exactly as the 2019 delta2bbox
#    (V1DeltaXYWHBBoxCoder);
#  - RoIAlign without half-pixel alignment, 2 samples per bin (sample_num=2),
#    pooling up to (x2 + 1) * scale, "+1" level mapping (V1RoIExtractor);
#  - RPN NMS with "+1" areas (offset=1) and no minimum-size filter, as the
#    2019 nms kernel and rpn_head.get_bboxes (min_bbox_size=0 filtered nothing).
# Test settings (the original's test_cfg): 1000 proposals before and after
# the RPN NMS at IoU 0.7; the R-CNN settings are the inference CLI's (SPEC 6).
custom_imports = dict(
    imports=['oidseg.mmdet_ext', 'oidseg.mmdet_ext.legacy'],
    allow_failed_imports=False)

num_classes = 23
target_stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
               [0.033, 0.033, 0.067, 0.067]]
model = dict(
    rpn_head=dict(
        anchor_generator=dict(type='LegacyAnchorGenerator', center_offset=0.5),
        bbox_coder=dict(type='V1DeltaXYWHBBoxCoder')),
    roi_head=dict(
        bbox_roi_extractor=dict(
            type='V1RoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=2,
                           aligned=False)),
        bbox_head=[
            dict(
                type='Shared2FCBBoxHead',
                in_channels=256,
                fc_out_channels=1024,
                roi_feat_size=7,
                num_classes=num_classes,
                bbox_coder=dict(
                    type='V1DeltaXYWHBBoxCoder',
                    target_means=[0., 0., 0., 0.],
                    target_stds=stds),
                reg_class_agnostic=True,
                loss_cls=dict(
                    type='CrossEntropyLoss', use_sigmoid=False,
                    loss_weight=1.0),
                loss_bbox=dict(type='SmoothL1Loss', beta=1.0,
                               loss_weight=1.0)) for stds in target_stds
        ],
        mask_roi_extractor=dict(
            type='V1RoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=2,
                           aligned=False)),
        mask_head=dict(num_classes=num_classes)),
    test_cfg=dict(
        rpn=dict(
            nms_pre=1000,
            max_per_img=1000,
            nms=dict(type='nms', iou_threshold=0.7, offset=1),
            min_bbox_size=-1)))
