# Demo-size L2: configs/models/L2.py shrunk by configs/demo/_base_/demo_sizes.py
# (backbone DemoResNet: Bottleneck, depth 14, with L2's DCNv1 in c3-c5).
_base_ = ['../models/L2.py', './_base_/demo_sizes.py']
_base_.pop('demo').shrink(_base_)
