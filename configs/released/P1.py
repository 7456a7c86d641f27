# P1 for the original's released weights parent_A_lr50_ep1_it8000.pth
# (ResNeXt-101 64x4d, 23 parent classes;
# 2019 config cascade_mask_rcnn_x101_64x4d_fpn_1x_colab_parent*.py).
# The 2019 box conventions: configs/released/_base_/legacy_2019.py.
_base_ = ['../models/P1.py', './_base_/legacy_2019.py']
_base_.pop('legacy').apply(_base_)
