# Open Images instance-segmentation training data (SPEC sections 3-5).
#
# The dataset reads our annotation pickle (docs/ARCHITECTURE.md) and loads
# the mask PNGs lazily (LoadOIDMasks). The order of the images is the
# re-balanced list (a .npy of indices into data_list) followed by
# OrderedListSampler: no shuffling. scripts/train.py fills in ann_file,
# order_file, skip and the pipeline chosen by --aug.

custom_imports = dict(imports=['oidseg.mmdet_ext'], allow_failed_imports=False)

dataset_type = 'OIDSegDataset'
backend_args = None

# long side 1333, short side uniform in 640..960, keep aspect ratio
train_scale_multiscale = [(1333, 640), (1333, 960)]
# P1 stage 1: single scale 1333x800
train_scale_single = (1333, 800)
# P1 stages 2/3 image-only augmentation: the original's albumentations
# Cutout(max_h_size=64, p=0.5) with the defaults num_holes=8, max_w_size=8:
# 8 holes of 64 (height) x 8 (width) pixels
cutout_max_px = 64
cutout_hole_size = (cutout_max_px, 8)

_load = [
    # stored pixel order, no EXIF rotation: the pickles' width/height and the
    # inference code read the JPEG header the same way
    dict(type='LoadImageFromFile', color_type='color_ignore_orientation',
         backend_args=backend_args),
    dict(type='LoadOIDAnnotations', with_bbox=True, with_mask=True),
]
_pack = [
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
_photometric = [
    dict(type='RandomCutOut', prob=0.5, n_holes=8, hole_size=cutout_hole_size),
    dict(type='RandomBrightnessContrast', prob=0.5, brightness=0.3,
         contrast=0.3),
    dict(type='RandomJPEG', prob=0.5, quality_range=(80, 99)),
]
_multiscale_resize = [
    dict(type='RandomResize', scale=train_scale_multiscale, keep_ratio=True)
]
_single_resize = [dict(type='Resize', scale=train_scale_single, keep_ratio=True)]

# scripts/train.py --aug NAME selects train_pipelines[NAME]
train_pipelines = dict(
    multiscale=_load + _multiscale_resize + _pack,
    single=_load + _single_resize + _pack,
    photometric=_load + _photometric + _multiscale_resize + _pack,
)
train_pipeline = train_pipelines['multiscale']

# 1 image per GPU x 4 GPUs = 4 images per iteration (SPEC section 5)
images_per_gpu = 1
base_images_per_iter = 4

train_dataloader = dict(
    batch_size=images_per_gpu,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='OrderedListSampler', order_file=None, skip=0),
    batch_sampler=None,
    dataset=dict(
        type=dataset_type,
        ann_file=None,
        filter_cfg=None,
        pipeline=train_pipeline,
        backend_args=backend_args))

val_dataloader = None
val_evaluator = None
val_cfg = None
test_dataloader = None
test_evaluator = None
test_cfg = None

# single-scale test pipeline (SPEC section 6 TTA is the inference module's job)
test_pipeline = [
    dict(type='LoadImageFromFile', color_type='color_ignore_orientation',
         backend_args=backend_args),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor')),
]

del _load, _pack, _photometric, _multiscale_resize, _single_resize
