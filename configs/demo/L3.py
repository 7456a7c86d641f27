# Demo-size L3: configs/models/L3.py shrunk by configs/demo/_base_/demo_sizes.py
# (backbone DemoResNeXt: depth 14, 4 groups x 4, with L3's DCNv1 in c5).
_base_ = ['../models/L3.py', './_base_/demo_sizes.py']
_base_.pop('demo').shrink(_base_)
