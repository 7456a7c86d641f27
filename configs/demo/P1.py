# Demo-size P1: configs/models/P1.py (23 parent classes, single-scale stage 1)
# with the sizes of configs/demo/_base_/demo_sizes.py (same backbone as the
# demo L1).
_base_ = ['./L1.py']

num_classes = 23
model = {{_base_.demo_model_resnext_parent}}

train_pipeline = {{_base_.demo_train_pipelines.single}}
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
