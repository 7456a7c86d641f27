# L1 for the original's released weights aug_large_ms_lr_test_epoch_1_iter_76000.pth
# (ResNeXt-101 64x4d; 2019 config cascade_mask_rcnn_x101_64x4d_fpn_1x_colab*.py).
# The 2019 box conventions: configs/released/_base_/legacy_2019.py.
_base_ = ['../models/L1.py', './_base_/legacy_2019.py']
_base_.pop('legacy').apply(_base_)
