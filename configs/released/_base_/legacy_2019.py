# The 2019 conventions of the original's mmdetection 0.6.0 fork, applied in
# place to the full model config a released config inherits:
#
#     _base_ = ['../models/<M>.py', './_base_/legacy_2019.py']
#     _base_.pop('legacy').apply(_base_)
#
# Key names and shapes stay those of configs/models/<M>.py, so the converted
# released weights load strictly; only the box conventions change
# (oidseg/mmdet_ext/legacy.py):
#  - anchors centred at (stride - 1) / 2 with "+1" sizes, rounded
#    (LegacyAnchorGenerator, center_offset=0.5);
#  - "+1" box coding, decoded exactly as the 2019 delta2bbox
#    (V1DeltaXYWHBBoxCoder), in the RPN and every cascade stage;
#  - RoIAlign without half-pixel alignment, 2 samples per bin (sample_num=2),
#    pooling up to (x2 + 1) * scale, "+1" level mapping (V1RoIExtractor);
#  - RPN NMS with "+1" areas (offset=1) and no minimum-size filter, as the
#    2019 nms kernel and rpn_head.get_bboxes (min_bbox_size=0 filtered nothing).
# Test settings (the original's test_cfg): 1000 proposals before and after
# the RPN NMS at IoU 0.7; the R-CNN settings are the inference CLI's (SPEC 6).

def _to_2019(cfg):
    """Switch a full model config (the ConfigDict of the released config's
    bases) to the 2019 box conventions, in place."""
    cfg.custom_imports.imports = [*cfg.custom_imports.imports, 'oidseg.mmdet_ext.legacy']
    model = cfg.model
    model.rpn_head.anchor_generator.update(type='LegacyAnchorGenerator', center_offset=0.5)
    model.rpn_head.bbox_coder.type = 'V1DeltaXYWHBBoxCoder'
    roi = model.roi_head
    for extractor in (roi.bbox_roi_extractor, roi.mask_roi_extractor):
        extractor.type = 'V1RoIExtractor'
        extractor.roi_layer.update(type='RoIAlign', sampling_ratio=2, aligned=False)
    for head in roi.bbox_head:
        head.bbox_coder.type = 'V1DeltaXYWHBBoxCoder'
    model.test_cfg.rpn.update(
        nms_pre=1000, max_per_img=1000,
        nms=dict(type='nms', iou_threshold=0.7, offset=1), min_bbox_size=-1)


legacy = dict(apply=_to_2019)
