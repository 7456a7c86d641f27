"""Annotation pickles against small hand-made raw files, and the demo end to end."""

from __future__ import annotations

import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from oidseg.annotations import (
    leaf_rows, parent_rows, select_heldout, split_shards,
)
from oidseg.demo import FILES, DemoSizes, generate_demo
from oidseg.errors import run_cli
from oidseg.hierarchy import load_hierarchy

REPO = Path(__file__).resolve().parents[1]
ROOT = "/m/0bl9f"
GP, PA, PB = "/m/0gp1", "/m/0pa1", "/m/0pb1"          # grandparent, two parents
A, B, C, D = "/m/0la1", "/m/0lb1", "/m/0lc1", "/m/0ld1"  # leaves; B under PA and PB
MASK_HEADER = "MaskPath,ImageID,LabelName,BoxID,BoxXMin,BoxXMax,BoxYMin,BoxYMax,PredictedIoU,Clicks\n"
DROP = "1d5ef05c8da80e31"
T1, T2, V1, V2, X1 = "a000000000000001", "b000000000000002", "c000000000000003", \
    "d000000000000004", "e000000000000005"
SIZES = {T1: (200, 100), T2: (64, 80), DROP: (50, 50), V1: (120, 90), V2: (90, 120),
         X1: (100, 100)}
PNG = None


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mask_row(image_id: str, mid: str, box_id: str, box: tuple[float, float, float, float]) -> str:
    name = f"{image_id}_{mid.replace('/', '')}_{box_id}.png"
    return f"{name},{image_id},{mid},{box_id},{box[0]},{box[1]},{box[2]},{box[3]},0.9,0.5 0.5 1\n"


@pytest.fixture()
def raw_set(tmp_path) -> dict:
    tree = {"LabelName": ROOT, "Subcategory": [
        {"LabelName": GP, "Subcategory": [
            {"LabelName": PA, "Subcategory": [{"LabelName": A}, {"LabelName": B}]}]},
        {"LabelName": PB, "Subcategory": [{"LabelName": B}, {"LabelName": C}]},
        {"LabelName": D}]}
    (tmp_path / "h.json").write_text(json.dumps(tree))
    (tmp_path / "c.csv").write_text(
        f"{A},Aa\n{B},Bb\n{C},Cc\n{D},Dd\n{GP},Grand\n{PA},ParA\n{PB},ParB\n")
    rows = {
        "train": [mask_row(T1, A, "00000001", (0.1, 0.5, 0.2, 0.6)),
                  mask_row(T1, B, "00000002", (0.0, 1.0, 0.0, 1.0)),
                  mask_row(T2, D, "00000003", (0.25, 0.5, 0.5, 0.75)),
                  mask_row(DROP, A, "00000004", (0.1, 0.2, 0.1, 0.2))],
        "validation": [mask_row(V1, C, "00000005", (0.5, 1.0, 0.0, 0.5)),
                       mask_row(V2, A, "00000006", (0.0, 0.5, 0.5, 1.0))],
        "v5test": [mask_row(X1, B, "00000007", (0.2, 0.4, 0.6, 0.8))],
    }
    paths = {}
    for split, lines in rows.items():
        csv = tmp_path / f"{split}_masks.csv"
        csv.write_text(MASK_HEADER + "".join(lines))
        img_dir, mask_dir = tmp_path / "img" / split, tmp_path / "masks" / split
        img_dir.mkdir(parents=True)
        mask_dir.mkdir(parents=True)
        for line in lines:
            name, image_id = line.split(",")[:2]
            Image.fromarray(np.full((7, 9), 255, np.uint8)).save(mask_dir / name)
            if not (img_dir / f"{image_id}.jpg").exists():
                w, h = SIZES[image_id]
                Image.new("RGB", (w, h), (90, 90, 90)).save(img_dir / f"{image_id}.jpg")
        paths[split] = (csv, img_dir, mask_dir)
    (tmp_path / "heldout.csv").write_text(f"ImageID\n{V1}\n")
    return {"root": tmp_path, "paths": paths}


def train_argv(raw_set, out: Path) -> list[str]:
    r = raw_set["root"]
    p = raw_set["paths"]
    return ["train", "--hierarchy", str(r / "h.json"), "--classes", str(r / "c.csv"),
            "--train-masks", str(p["train"][0]), "--train-images", str(p["train"][1]),
            "--train-mask-dir", str(p["train"][2]),
            "--val-masks", str(p["validation"][0]), "--val-images", str(p["validation"][1]),
            "--val-mask-dir", str(p["validation"][2]),
            "--v5test-masks", str(p["v5test"][0]), "--v5test-images", str(p["v5test"][1]),
            "--v5test-mask-dir", str(p["v5test"][2]),
            "--heldout", str(r / "heldout.csv"),
            "--leaf-out", str(out / "leaf.pkl"), "--parent-out", str(out / "parent.pkl")]


def test_leaf_and_parent_pickles(raw_set, tmp_path):
    build = load_script("build_annotations")
    assert run_cli(build.main, train_argv(raw_set, tmp_path / "out")) == 0
    leaf = pickle.load(open(tmp_path / "out" / "leaf.pkl", "rb"))
    parent = pickle.load(open(tmp_path / "out" / "parent.pkl", "rb"))

    assert leaf["metainfo"]["classes"] == [A, B, C, D]
    assert leaf["metainfo"]["names"] == ["Aa", "Bb", "Cc", "Dd"]
    assert parent["metainfo"]["classes"] == [PA, PB]  # grandparent GP excluded
    by_id = {r["img_id"]: r for r in leaf["data_list"]}
    # drop list and held-out V1 excluded; V2 (validation) and X1 (v5test) included
    assert list(by_id) == [T1, T2, V2, X1]
    assert [by_id[i]["source"] for i in by_id] == ["train", "train", "validation", "v5test"]
    t1 = by_id[T1]
    assert (t1["width"], t1["height"]) == (200, 100)
    assert t1["img_path"].endswith(f"img/train/{T1}.jpg")
    assert t1["mask_dir"].endswith("masks/train")
    assert [i["bbox_label"] for i in t1["instances"]] == [0, 1]
    np.testing.assert_allclose(t1["instances"][0]["bbox"], [20, 20, 100, 60])  # x*w, y*h
    np.testing.assert_allclose(t1["instances"][1]["bbox"], [0, 0, 200, 100])
    assert t1["instances"][0]["mask_file"] == f"{T1}_m0la1_00000001.png"
    assert all(i["ignore_flag"] == 0 for i in t1["instances"])
    np.testing.assert_allclose(by_id[T2]["instances"][0]["bbox"], [16, 40, 32, 60])
    assert by_id[X1]["mask_dir"].endswith("masks/v5test")

    pby = {r["img_id"]: r for r in parent["data_list"]}
    # T2 has only the top-level leaf D: no parent instance; X1 (B) gives PA and PB
    assert list(pby) == [T1, V2, X1]
    t1p = pby[T1]["instances"]
    assert [(i["bbox_label"], i["mask_file"]) for i in t1p] == [
        (0, f"{T1}_m0la1_00000001.png"),   # A -> PA
        (0, f"{T1}_m0lb1_00000002.png"),   # B -> PA
        (1, f"{T1}_m0lb1_00000002.png"),   # B -> PB (same mask, copied)
    ]
    np.testing.assert_allclose(t1p[2]["bbox"], [0, 0, 200, 100])
    assert [i["bbox_label"] for i in pby[X1]["instances"]] == [0, 1]
    assert [i["bbox_label"] for i in pby[V2]["instances"]] == [0]  # A -> PA
    assert pby[V2]["source"] == "validation"


def test_parent_rows_keep_rows_labelled_with_a_parent(raw_set):
    r = raw_set["root"]
    h = load_hierarchy(r / "h.json", r / "c.csv")
    masks = pd.DataFrame({
        "MaskPath": ["p1.png", "p2.png", "p3.png"], "ImageID": [T1, T1, T2],
        "LabelName": [PA, GP, C], "BoxXMin": [0.0] * 3, "BoxXMax": [1.0] * 3,
        "BoxYMin": [0.0] * 3, "BoxYMax": [1.0] * 3})
    block = parent_rows(masks, h)
    # PA row kept as PA; GP row dropped (grandparent); C -> PB
    assert block.labels.tolist() == [0, 1]
    assert block.mask_files.tolist() == ["p1.png", "p3.png"]
    leaf = leaf_rows(masks, h)
    assert leaf.labels.tolist() == [2] and leaf.mask_files.tolist() == ["p3.png"]


def test_select_heldout_is_seeded_and_sorted():
    ids = [f"{k:016x}" for k in range(50)] + [DROP]
    a = select_heldout(ids * 2, 10, seed=7)
    assert list(a) == sorted(a) and len(set(a)) == 10 and DROP not in a
    assert list(a) == list(select_heldout(ids, 10, seed=7))
    assert list(a) != list(select_heldout(ids, 10, seed=8))


def test_split_shards():
    assert split_shards(list(range(3)), 25) == [[0], [1], [2]] + [[]] * 22
    shards = split_shards(list(range(99_999)), 25)
    assert [len(s) for s in shards] == [4000] * 24 + [3999]
    assert sum(shards, []) == list(range(99_999))
    assert split_shards([], 4) == [[], [], [], []]


def test_image_lists_and_shards(raw_set, tmp_path):
    build = load_script("build_annotations")
    r = raw_set["root"]
    img_dir = raw_set["paths"]["train"][1]
    (r / "list.csv").write_text(f"ImageID,ImageWidth,ImageHeight,PredictionString\n"
                                f"{T2},1,1,\n{T1},1,1,\n{DROP},1,1,\n")
    outs = [tmp_path / "shards" / f"{k:02d}.pkl" for k in range(25)]
    argv = ["images", "--hierarchy", str(r / "h.json"), "--classes", str(r / "c.csv"),
            "--list", str(r / "list.csv"), "--image-dir", str(img_dir), "--source", "test",
            "--out", *map(str, outs)]
    assert run_cli(build.main, argv) == 0
    shards = [pickle.load(open(p, "rb"))["data_list"] for p in outs]
    assert [len(s) for s in shards] == [1, 1, 1] + [0] * 22
    # list order kept, sizes from the JPEG headers (not from the CSV), no instances
    assert [s[0]["img_id"] for s in shards[:3]] == [T2, T1, DROP]
    assert (shards[0][0]["width"], shards[0][0]["height"]) == (64, 80)
    assert shards[1][0]["instances"] == []


def test_demo_end_to_end(tmp_path):
    data, res = tmp_path / "demo", tmp_path / "res"
    generate_demo(data, seed=5, sizes=DemoSizes(n_train=12, n_validation=8, n_v5test=4, n_test=3))
    extract, build = load_script("extract_masks"), load_script("build_annotations")
    for split, prefix in (("train", "challenge-2019-train-masks-"),
                          ("validation", "challenge-2019-validation-masks-"),
                          ("v5test", "test-masks-")):
        zips = sorted(str(p) for p in (data / "masks").glob(f"{prefix}*.zip"))
        assert len(zips) == 16
        assert run_cli(extract.main, ["--zips", *zips, "--out-dir", str(res / "masks" / split),
                                      "--flag", str(res / "masks" / f"{split}.done")]) == 0
    h = ["--hierarchy", str(data / FILES["hierarchy"]), "--classes", str(data / FILES["classes"])]
    assert run_cli(build.main, ["classes", *h, "--out", str(res / "classes.json")]) == 0
    assert run_cli(build.main, ["heldout", *h, "--val-masks", str(data / FILES["val_masks"]),
                                "--size", "4", "--seed", "1",
                                "--out", str(res / "heldout_val.csv")]) == 0
    argv = ["train", *h]
    for key, split, csv in (("train", "train", "train_masks"), ("val", "validation", "val_masks"),
                            ("v5test", "v5test", "v5test_masks")):
        argv += [f"--{key}-masks", str(data / FILES[csv]),
                 f"--{key}-images", str(data / "images" / split),
                 f"--{key}-mask-dir", str(res / "masks" / split)]
    argv += ["--heldout", str(res / "heldout_val.csv"), "--leaf-out", str(res / "leaf.pkl"),
             "--parent-out", str(res / "parent.pkl")]
    assert run_cli(build.main, argv) == 0

    classes = json.loads((res / "classes.json").read_text())
    assert len(classes["grandparent_classes"]) == 2
    heldout = pd.read_csv(res / "heldout_val.csv", dtype=str)["ImageID"].tolist()
    assert len(heldout) == 4 and heldout == sorted(heldout)
    leaf = pickle.load(open(res / "leaf.pkl", "rb"))
    rows = sum(len(pd.read_csv(data / FILES[k], dtype=str)) for k in ("train_masks", "v5test_masks"))
    val = pd.read_csv(data / FILES["val_masks"], dtype=str)
    train = pd.read_csv(data / FILES["train_masks"], dtype=str)
    rows += int((~val["ImageID"].isin(heldout)).sum())
    rows -= int((train["ImageID"] == DROP).sum())
    assert sum(len(r["instances"]) for r in leaf["data_list"]) == rows
    ids = {r["img_id"] for r in leaf["data_list"]}
    assert DROP not in ids and not ids & set(heldout)
    for record in leaf["data_list"]:
        for inst in record["instances"]:
            x1, y1, x2, y2 = inst["bbox"]
            assert 0 <= x1 <= x2 <= record["width"] and 0 <= y1 <= y2 <= record["height"]
            assert (Path(record["mask_dir"]) / inst["mask_file"]).is_file()
