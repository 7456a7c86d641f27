"""OIDSegDataset + LoadOIDAnnotations on hand-made records in our pickle format."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest

from oidseg.errors import InputError
from oidseg.mmdet_ext.dataset import OIDSegDataset, make_synthetic_dataset

PIPELINE = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadOIDAnnotations", with_bbox=True, with_mask=True),
    dict(type="PackDetInputs"),
]
CLASSES = ["/m/aaa", "/m/bbb", "/m/ccc"]


def write_record(tmp_path, instances, mask_pngs):
    """An image of 40 x 30 px and mask PNGs of other sizes."""
    img = np.full((30, 40, 3), 127, np.uint8)
    cv2.imwrite(str(tmp_path / "img0.jpg"), img)
    (tmp_path / "masks").mkdir(exist_ok=True)
    for name, mask in mask_pngs.items():
        cv2.imwrite(str(tmp_path / "masks" / name), mask)
    ann = {"metainfo": {"classes": CLASSES, "names": ["A", "B", "C"]},
           "data_list": [{"img_id": "img0", "img_path": str(tmp_path / "img0.jpg"),
                          "width": 40, "height": 30, "source": "train",
                          "mask_dir": str(tmp_path / "masks"), "instances": instances}]}
    with open(tmp_path / "ann.pkl", "wb") as fh:
        pickle.dump(ann, fh)
    return str(tmp_path / "ann.pkl")


def build(ann_file):
    from mmengine.registry import init_default_scope

    import oidseg.mmdet_ext  # noqa: F401

    init_default_scope("mmdet")
    return OIDSegDataset(ann_file=ann_file, pipeline=PIPELINE)


def test_boxes_labels_and_masks_resized_to_the_image(tmp_path):
    # mask 1: 20 x 15 PNG (half size), value 255, block rows 2..5, cols 4..9
    m1 = np.zeros((15, 20), np.uint8)
    m1[2:6, 4:10] = 255
    # mask 2: 10 x 10 PNG, value 1 (binarised > 0), block rows 5..9, cols 0..4
    m2 = np.zeros((10, 10), np.uint8)
    m2[5:10, 0:5] = 1
    instances = [
        {"bbox": [8.0, 4.0, 20.0, 12.0], "bbox_label": 2, "mask_file": "m1.png", "ignore_flag": 0},
        {"bbox": [0.0, 15.0, 20.0, 30.0], "bbox_label": 0, "mask_file": "m2.png", "ignore_flag": 0},
    ]
    ds = build(write_record(tmp_path, instances, {"m1.png": m1, "m2.png": m2}))
    assert len(ds) == 1
    assert list(ds.metainfo["classes"]) == CLASSES
    sample = ds[0]
    gt = sample["data_samples"].gt_instances
    np.testing.assert_allclose(gt.bboxes.numpy(), [[8, 4, 20, 12], [0, 15, 20, 30]])
    assert gt.labels.tolist() == [2, 0]
    masks = gt.masks.masks
    assert masks.shape == (2, 30, 40)
    expect1 = np.zeros((30, 40), np.uint8)
    expect1[4:12, 8:20] = 1  # exact 2x nearest upscaling
    expect2 = np.repeat(np.repeat((m2 > 0).astype(np.uint8), 3, axis=0), 4, axis=1)
    np.testing.assert_array_equal(masks[0], expect1)
    np.testing.assert_array_equal(masks[1], expect2)
    assert set(np.unique(masks)) <= {0, 1}


def test_missing_mask_png_is_a_clear_error(tmp_path):
    instances = [{"bbox": [0, 0, 5, 5], "bbox_label": 1, "mask_file": "gone.png", "ignore_flag": 0}]
    ds = build(write_record(tmp_path, instances, {}))
    with pytest.raises(InputError, match=r"gone\.png: mask PNG is missing"):
        ds[0]
    (tmp_path / "masks" / "gone.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(InputError, match=r"gone\.png: mask PNG cannot be decoded"):
        ds[0]


@pytest.mark.parametrize("instance, message", [
    ({"bbox": [0, 0, 5, 5], "bbox_label": 3, "mask_file": "a.png"}, "bbox_label 3 outside 0..2"),
    ({"bbox": [6, 0, 5, 5], "bbox_label": 0, "mask_file": "a.png"}, "x2 < x1"),
    ({"bbox": [0, 0, 5, 5], "bbox_label": 0}, "has no 'mask_file'"),
])
def test_bad_records_name_the_file_and_image(tmp_path, instance, message):
    ann_file = write_record(tmp_path, [instance], {})
    with pytest.raises(InputError, match=f"ann.pkl: image img0: .*{message}"):
        build(ann_file)


def test_not_an_annotation_pickle(tmp_path):
    (tmp_path / "x.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(InputError, match="x.pkl: not an annotation pickle"):
        build(str(tmp_path / "x.pkl"))
    (tmp_path / "y.pkl").write_bytes(b"trunc")
    with pytest.raises(InputError, match="y.pkl"):
        build(str(tmp_path / "y.pkl"))


def test_synthetic_dataset_masks_match_their_boxes(tmp_path):
    ann = make_synthetic_dataset(str(tmp_path), n_images=4, n_classes=3, seed=3)
    ds = build(str(tmp_path / "ann.pkl"))
    assert len(ds) == 4
    for i in range(4):
        gt = ds[i]["data_samples"].gt_instances
        rec = ann["data_list"][i]
        assert gt.masks.masks.shape[1:] == (rec["height"], rec["width"])
        for box, mask in zip(gt.bboxes.numpy(), gt.masks.masks):
            ys, xs = np.nonzero(mask)
            # the PNG is 0.75 x 0.6 of the image: nearest resizing moves edges by a few px
            assert np.allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], box, atol=4)
