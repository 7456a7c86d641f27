# L3 for the original's released weights x101_dcn_gcp_lr50_ep1_it26000.pth
# (ResNeXt-101 64x4d, DCNv1 with groups=64 in c5 only;
# 2019 config cascade_mask_rcnn_x101_64x4d_fpn_1x_new_fp16_dcn*.py).
# The 2019 box conventions: configs/released/_base_/legacy_2019.py.
_base_ = ['../models/L3.py', './_base_/legacy_2019.py']
_base_.pop('legacy').apply(_base_)
