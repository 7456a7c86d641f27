# L2 for the original's released weights aug_large_lr15_dcn_mscale_balanced_rnd2_epoch_1_iter_12000.pth
# (ResNet-101, DCNv1 = modulated=False in c3-c5, deformable_groups=1;
# 2019 config cascade_mask_rcnn_dconv_c3-c5_r101_fpn_1x_colab*.py).
# configs/models/L2.py's type='DCN' is mmcv 2's DeformConv2dPack (DCNv1).
# The 2019 box conventions: configs/released/_base_/legacy_2019.py.
_base_ = ['../models/L2.py', './_base_/legacy_2019.py']
_base_.pop('legacy').apply(_base_)
