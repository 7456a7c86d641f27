# Demo-size L1: configs/models/L1.py shrunk by configs/demo/_base_/demo_sizes.py
# (backbone DemoResNeXt: depth 14, 4 groups x 4).
_base_ = ['../models/L1.py', './_base_/demo_sizes.py']
_base_.pop('demo').shrink(_base_)
