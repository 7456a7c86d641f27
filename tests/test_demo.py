"""Demo generator: official formats, determinism, mask/zip layout."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from oidseg import raw
from oidseg.demo import FILES, ROOT_MID, ZIP_PREFIX, DemoSizes, generate_demo
from oidseg.errors import InputError
from oidseg.hierarchy import load_hierarchy

SMALL = DemoSizes(n_train=40, n_validation=12, n_v5test=6, n_test=4)
HEX = "0123456789abcdef"
REPO = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    generate_demo(out, seed=3, sizes=SMALL)
    return out


@pytest.fixture(scope="module")
def hierarchy(demo_dir):
    return load_hierarchy(demo_dir / FILES["hierarchy"], demo_dir / FILES["classes"])


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_same_seed_identical_bytes(demo_dir, tmp_path):
    again = tmp_path / "again"
    generate_demo(again, seed=3, sizes=SMALL)
    a, b = _file_bytes(demo_dir), _file_bytes(again)
    assert a.keys() == b.keys()
    for name in a:  # CSVs, JSON, zips (fixed timestamps) and JPEGs
        assert a[name] == b[name], name


def test_other_seed_differs(demo_dir, tmp_path):
    other = tmp_path / "other"
    generate_demo(other, seed=4, sizes=SMALL)
    for key in ("train_masks", "train_bbox", "test_list"):
        assert (other / FILES[key]).read_bytes() != (demo_dir / FILES[key]).read_bytes()
    assert (other / FILES["hierarchy"]).read_bytes() == (demo_dir / FILES["hierarchy"]).read_bytes()


def test_hierarchy_shape(demo_dir, hierarchy):
    tree = json.loads((demo_dir / FILES["hierarchy"]).read_text())
    assert tree["LabelName"] == ROOT_MID
    assert 8 <= len(hierarchy.leaf_classes) <= 10
    assert len(hierarchy.grandparent_classes) == 2
    assert any(len(hierarchy.parents[c]) == 2 for c in hierarchy.leaf_classes)
    assert any(len(hierarchy.ancestors[c]) >= 2 and len(hierarchy.parents[c]) == 1
               for c in hierarchy.leaf_classes)  # depth 2
    assert any(not hierarchy.ancestors[c] for c in hierarchy.leaf_classes)  # top level
    for mid in hierarchy.classes:
        assert re.fullmatch(r"/m/0?[0-9a-z_]+", mid)


def test_class_csv_has_no_header(demo_dir):
    lines = (demo_dir / FILES["classes"]).read_text().splitlines()
    assert lines[0].startswith("/m/") and all(len(l.split(",")) == 2 for l in lines)
    assert len(lines) == 15


def test_csv_headers_are_official(demo_dir):
    def header(key):
        return (demo_dir / FILES[key]).read_text().splitlines()[0].split(",")

    masks = ["MaskPath", "ImageID", "LabelName", "BoxID", "BoxXMin", "BoxXMax",
             "BoxYMin", "BoxYMax", "PredictedIoU", "Clicks"]
    assert header("train_masks") == header("val_masks") == header("v5test_masks") == masks
    assert header("train_bbox") == header("val_bbox") == [
        "ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax", "IsGroupOf"]
    assert header("train_labels") == header("val_labels") == ["ImageID", "LabelName", "Confidence"]
    assert header("test_list")[0] == "ImageID"


def test_readers_accept_demo_and_content(demo_dir, hierarchy):
    mids = hierarchy.classes
    leaves = set(hierarchy.leaf_classes)
    for split in ("train", "val"):
        masks = raw.read_masks_csv(demo_dir / FILES[f"{split}_masks"], mids, all_columns=True)
        boxes = raw.read_bbox_csv(demo_dir / FILES[f"{split}_bbox"], mids)
        labels = raw.read_labels_csv(demo_dir / FILES[f"{split}_labels"], mids)
        assert set(masks["LabelName"]) <= leaves  # masks: leaf labels only
        assert (boxes["IsGroupOf"] == 1).any()
        assert set(labels["Confidence"]) == {0, 1}
        assert masks["ImageID"].str.fullmatch(r"[0-9a-f]{16}").all()
        # box-only rows: non-group boxes without a mask
        key = ["ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax"]
        mk = masks.rename(columns={"BoxXMin": "XMin", "BoxXMax": "XMax",
                                   "BoxYMin": "YMin", "BoxYMax": "YMax"})[key]
        merged = boxes[boxes["IsGroupOf"] == 0].merge(mk, on=key, how="left", indicator=True)
        assert (merged["_merge"] == "left_only").any()
        assert len(merged) >= len(masks)
    v5 = raw.read_masks_csv(demo_dir / FILES["v5test_masks"], mids)
    assert len(v5) > 0
    test = raw.read_image_list(demo_dir / FILES["test_list"])
    assert len(test) == SMALL.n_test


def test_zips_sharded_and_masks_resized(demo_dir):
    for split, key in (("train", "train_masks"), ("validation", "val_masks"),
                       ("v5test", "v5test_masks")):
        masks = pd.read_csv(demo_dir / FILES[key], dtype=str)
        image_dir = demo_dir / "images" / split
        members = set()
        for shard in HEX:
            path = demo_dir / "masks" / f"{ZIP_PREFIX[split]}{shard}.zip"
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                assert all(n[0] == shard for n in names)
                members.update(names)
                for name in names[:2]:
                    png = Image.open(io.BytesIO(zf.read(name)))
                    image_size = Image.open(image_dir / f"{name[:16]}.jpg").size
                    assert png.size != image_size
                    assert set(np.unique(np.asarray(png))) <= {0, 255}
        assert members == set(masks["MaskPath"])
        expected = (masks["ImageID"] + "_" + masks["LabelName"].str.replace("/", "")
                    + "_" + masks["BoxID"] + ".png")
        assert (expected == masks["MaskPath"]).all()
    for split in ("train", "validation", "v5test", "test"):
        assert len(list((demo_dir / "images" / split).glob("*.jpg"))) == SMALL.count(split)


def test_image_sizes_vary(demo_dir):
    sizes = {Image.open(p).size for p in (demo_dir / "images" / "train").glob("*.jpg")}
    assert len(sizes) > 5
    assert all(SMALL.min_side <= s <= SMALL.max_side for wh in sizes for s in wh)


def test_long_tail(demo_dir, hierarchy):
    masks = pd.read_csv(demo_dir / FILES["train_masks"], dtype=str)
    counts = masks["LabelName"].value_counts()
    assert counts.iloc[0] >= 3 * counts.iloc[-1]


def test_refuses_to_overwrite_other_folder(tmp_path):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="refusing"):
        generate_demo(target, seed=0, sizes=SMALL)
    assert (target / "keep.txt").read_text() == "x"


def test_cli(tmp_path):
    main = load_script("make_demo").main
    out = tmp_path / "d"
    main(["--out-dir", str(out), "--seed", "1", "--n-train", "3", "--n-validation", "2",
          "--n-v5test", "1", "--n-test", "2"])
    assert len(pd.read_csv(out / FILES["test_list"])) == 2
    main(["--out-dir", str(out), "--seed", "1", "--n-train", "4", "--n-validation", "2",
          "--n-v5test", "1", "--n-test", "2"])  # an earlier demo is replaced
    assert len(list((out / "images" / "train").glob("*.jpg"))) == 4
