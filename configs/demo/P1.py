# Demo-size P1: configs/models/P1.py (23 parent classes, single-scale stage 1)
# shrunk by configs/demo/_base_/demo_sizes.py (backbone as the demo L1).
_base_ = ['../models/P1.py', './_base_/demo_sizes.py']
_base_.pop('demo').shrink(_base_)
