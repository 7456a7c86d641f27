"""Post-processing: convert, expand, mask-NMS merge, combine (SPEC section 7)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from oidseg.errors import InputError
from oidseg.hierarchy import load_hierarchy
from oidseg.kaggle import HEADER, ShardWriter, decode_mask, encode_mask, iter_shard
from oidseg.postprocess import (
    combine,
    convert,
    expand,
    expand_predictions,
    load_classes_json,
    RleSet,
    mask_nms,
    merge,
    merge_predictions,
)

# root -> leafA; P1 -> {leafB, leafC}; P2 -> {leafC, leafD};
# G -> {P3 -> leafF, leafE}: leafC has two parents, leafF sits at depth 2.
HIERARCHY = {
    "LabelName": "/m/root",
    "Subcategory": [
        {"LabelName": "/m/leafA"},
        {
            "LabelName": "/m/P1",
            "Subcategory": [{"LabelName": "/m/leafB"}, {"LabelName": "/m/leafC"}],
        },
        {
            "LabelName": "/m/P2",
            "Subcategory": [{"LabelName": "/m/leafC"}, {"LabelName": "/m/leafD"}],
        },
        {
            "LabelName": "/m/G",
            "Subcategory": [
                {"LabelName": "/m/P3", "Subcategory": [{"LabelName": "/m/leafF"}]},
                {"LabelName": "/m/leafE"},
            ],
        },
    ],
}
MIDS = [
    "/m/leafA",
    "/m/leafB",
    "/m/leafC",
    "/m/leafD",
    "/m/leafE",
    "/m/leafF",
    "/m/P1",
    "/m/P2",
    "/m/P3",
    "/m/G",
]


@pytest.fixture
def classes_json(tmp_path):
    (tmp_path / "h.json").write_text(json.dumps(HIERARCHY))
    (tmp_path / "c.csv").write_text("".join(f"{m},{m[3:]}\n" for m in MIDS))
    hierarchy = load_hierarchy(tmp_path / "h.json", tmp_path / "c.csv")
    path = tmp_path / "classes.json"
    path.write_text(json.dumps(hierarchy.to_json()))
    return path


def counts_of(mask: np.ndarray) -> bytes:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"]


def strip(h: int, w: int, lo: int, hi: int) -> np.ndarray:
    """h x w mask, columns lo..hi-1 set."""
    m = np.zeros((h, w), dtype=np.uint8)
    m[:, lo:hi] = 1
    return m


def rle(mask: np.ndarray) -> dict:
    return {"size": list(mask.shape), "counts": counts_of(mask)}


def triple(label: str, score: str, mask: np.ndarray) -> str:
    return f"{label} {score} {encode_mask(counts_of(mask))}"


# ---------------------------------------------------------------- convert


def detection_shard(tmp_path, name="det.pkl", bad_label=False):
    m1 = strip(6, 8, 1, 4)
    m2 = strip(6, 8, 2, 7)
    shard = {
        "format": "oidseg-detections/1",
        "classes": ["/m/leafA", "/m/leafC", "/m/leafF"],
        "images": [
            {
                "img_id": "img1",
                "width": 8,
                "height": 6,
                "labels": np.array([1, 2 if not bad_label else 7]),
                "scores": np.array([0.9, 4e-8], dtype=np.float32),
                "bboxes": np.zeros((2, 4), np.float32),
                "masks": [counts_of(m1), counts_of(m2)],
            },
            {
                "img_id": "img2",
                "width": 5,
                "height": 3,
                "labels": np.zeros(0, np.int64),
                "scores": np.zeros(0, np.float32),
                "bboxes": np.zeros((0, 4), np.float32),
                "masks": [],
            },
        ],
    }
    path = tmp_path / name
    path.write_bytes(pickle.dumps(shard))
    return path, [m1, m2]


def test_convert_writes_every_image_and_exact_masks(tmp_path):
    det, masks = detection_shard(tmp_path)
    out = tmp_path / "out.csv"
    assert convert(det, out) == 2
    rows = list(iter_shard(out))
    assert [(r.image_id, r.width, r.height) for r in rows] == [("img1", 8, 6), ("img2", 5, 3)]
    assert rows[1].predictions == ""
    parts = rows[0].predictions.split(" ")
    assert parts[0::3] == ["/m/leafC", "/m/leafF"]
    assert parts[1::3] == ["0.900000", "0.000001"]  # never 0.000000, never 4e-08
    for enc, m in zip(parts[2::3], masks):
        assert decode_mask(enc) == counts_of(m)
    first = out.read_bytes()
    convert(det, out)
    assert out.read_bytes() == first  # byte-identical rerun


def test_convert_bad_input_leaves_no_output(tmp_path):
    det, _ = detection_shard(tmp_path, bad_label=True)
    out = tmp_path / "post" / "out.csv"
    with pytest.raises(InputError, match=r"image 0 / img1: label outside"):
        convert(det, out)
    assert not out.exists() and list(out.parent.iterdir()) == []


# ---------------------------------------------------------------- expand


def test_expand_two_parents_and_depth_two(classes_json):
    classes = load_classes_json(classes_json)
    pred = "/m/leafC 0.800000 MC /m/leafF 0.700000 MF /m/leafA 0.600000 MA /m/P3 0.500000 M3"
    full = expand_predictions(pred, classes.ancestors, parents_only=False, score_thr=0.0)
    assert full.split(" ") == (
        "/m/leafC 0.800000 MC /m/leafF 0.700000 MF /m/leafA 0.600000 MA /m/P3 0.500000 M3 "
        "/m/P1 0.800000 MC /m/P2 0.800000 MC /m/P3 0.700000 MF /m/G 0.700000 MF "
        "/m/G 0.500000 M3"
    ).split(" ")
    parents = expand_predictions(pred, classes.ancestors, parents_only=True, score_thr=0.0)
    assert parents.split(" ") == (
        "/m/P1 0.800000 MC /m/P2 0.800000 MC /m/P3 0.700000 MF /m/G 0.700000 MF " "/m/G 0.500000 M3"
    ).split(" ")
    # threshold: the original drops only score < thr, so a score EQUAL to it stays
    thr = expand_predictions(pred, classes.ancestors, parents_only=True, score_thr=0.7)
    assert thr == "/m/P1 0.800000 MC /m/P2 0.800000 MC /m/P3 0.700000 MF /m/G 0.700000 MF"
    thr = expand_predictions(pred, classes.ancestors, parents_only=True, score_thr=0.75)
    assert thr == "/m/P1 0.800000 MC /m/P2 0.800000 MC"
    # threshold 0 (the seed's) keeps a 0.000000 triple too
    zero = expand_predictions("/m/leafF 0.000000 MF", classes.ancestors, parents_only=False,
                              score_thr=0.0)
    assert zero == "/m/leafF 0.000000 MF /m/P3 0.000000 MF /m/G 0.000000 MF"


def test_expand_file_and_unknown_label(classes_json, tmp_path):
    classes = load_classes_json(classes_json)
    src = tmp_path / "in.csv"
    with ShardWriter(src) as w:
        w.write("a", 4, 4, "/m/leafF 0.500000 XX")
        w.write("b", 4, 4, "")
        w.write("c", 4, 4, "/m/nope 0.500000 XX")
    out = tmp_path / "out.csv"
    with pytest.raises(InputError, match=r"row 4 / c: unknown LabelName '/m/nope'"):
        expand(src, classes, out, parents_only=True)
    assert not out.exists()
    src.write_text(f"{HEADER}\na,4,4,/m/leafF 0.500000 XX\nb,4,4,\n")
    assert expand(src, classes, out, parents_only=True) == 2
    assert out.read_text() == f"{HEADER}\na,4,4,/m/P3 0.500000 XX /m/G 0.500000 XX\nb,4,4,\n"


# ---------------------------------------------------------------- mask NMS


@pytest.fixture
def nms_keep():
    def run(masks, scores, labels=None, iou=0.5):
        labels = labels or ["/m/P1"] * len(masks)
        h, w = masks[0].shape
        rles = RleSet([counts_of(m) for m in masks], h, w)
        return mask_nms(labels, np.array(scores, float), rles, iou).tolist()

    return run


def test_nms_iou_threshold_edges(nms_keep):
    a = strip(2, 200, 0, 100)
    just_above = strip(2, 200, 33, 133)  # 67 / 133 = 0.504
    just_below = strip(2, 200, 34, 134)  # 66 / 134 = 0.493
    exactly = strip(2, 20, 4, 16)  # vs strip(0, 12): 8 / 16 = 0.5
    assert nms_keep([a, just_above], [0.9, 0.8]) == [0]
    assert nms_keep([a, just_below], [0.9, 0.8]) == [0, 1]
    assert nms_keep([strip(2, 20, 0, 12), exactly], [0.9, 0.8]) == [0]  # IoU >= 0.5
    # walk by descending score: the lower-scored one is dropped whatever the order
    assert nms_keep([just_above, a], [0.8, 0.9]) == [1]


def test_nms_chain_only_kept_ones_suppress(nms_keep):
    a = strip(1, 300, 0, 100)
    b = strip(1, 300, 30, 130)  # IoU(a, b) = 70/130 -> suppressed by a
    c = strip(1, 300, 60, 160)  # IoU(a, c) = 40/160, IoU(b, c) = 70/130
    assert nms_keep([a, b, c], [0.9, 0.8, 0.7]) == [0, 2]


def test_nms_equal_scores_suppress_in_input_order(nms_keep):
    m = strip(3, 10, 2, 6)
    assert nms_keep([m, m], [0.5, 0.5]) == [0]
    assert nms_keep([m, m, m], [0.5, 0.7, 0.5]) == [1]


def test_nms_different_classes_never_suppress(nms_keep):
    m = strip(3, 10, 2, 6)
    assert nms_keep([m, m, m], [0.5, 0.5, 0.4], labels=["/m/P1", "/m/P2", "/m/P1"]) == [0, 1]


def test_merge_predictions_drops_empty_and_thresholds():
    h, w = 4, 10
    full = strip(h, w, 0, 10)
    empty = np.zeros((h, w), np.uint8)
    a = " ".join([triple("/m/P1", "0.400000", full), triple("/m/P2", "0.900000", empty)])
    b = " ".join(
        [
            triple("/m/P1", "0.400000", full),
            triple("/m/P2", "0.000000", full),
            triple("/m/G", "0.300000", full),
        ]
    )
    merged = merge_predictions([a, b], w, h, iou_thr=0.5, score_thr=0.0)
    # first input wins the tie; empty mask and the zero score are dropped
    assert merged == " ".join([triple("/m/P1", "0.400000", full), triple("/m/G", "0.300000", full)])
    assert merge_predictions([a, b], w, h, iou_thr=0.5, score_thr=0.35) == triple(
        "/m/P1", "0.400000", full
    )
    assert merge_predictions(["", ""], w, h, iou_thr=0.5, score_thr=0.0) == ""


def test_merge_files(tmp_path):
    h, w = 4, 10
    left = strip(h, w, 0, 5)
    a, b, out = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "m.csv"
    with ShardWriter(a) as wr:
        wr.write("i1", w, h, triple("/m/P1", "0.600000", left))
        wr.write("i2", w, h, "")
    with ShardWriter(b) as wr:
        wr.write(
            "i1",
            w,
            h,
            " ".join([triple("/m/P1", "0.700000", left), triple("/m/P2", "0.100000", left)]),
        )
        wr.write("i2", w, h, "")
    assert merge([a, b], out) == 2
    assert out.read_text() == (
        f"{HEADER}\ni1,{w},{h},{triple('/m/P1', '0.700000', left)} "
        f"{triple('/m/P2', '0.100000', left)}\ni2,{w},{h},\n"
    )
    first = out.read_bytes()
    merge([a, b], out)
    assert out.read_bytes() == first
    # inputs out of step: error, no output
    with ShardWriter(b) as wr:
        wr.write("i2", w, h, "")
        wr.write("i1", w, h, "")
    out2 = tmp_path / "m2.csv"
    with pytest.raises(InputError, match=r"b.csv: row 2 / i2: expected image i1"):
        merge([a, b], out2)
    assert not out2.exists()
    # corrupt mask: named by row and image
    a.write_text(f"{HEADER}\ni1,{w},{h},/m/P1 0.5 !!!\ni2,{w},{h},\n")
    with pytest.raises(InputError, match=r"row 2 / i1: triple 1 \(/m/P1\): EncodedMask"):
        merge([a, a], out2)


# ---------------------------------------------------------------- combine


def write_shard(path, rows):
    with ShardWriter(path) as w:
        for r in rows:
            w.write(*r)


def test_combine_order_leaf_first_and_empty_images(tmp_path):
    image_list = tmp_path / "sample_submission.csv"
    image_list.write_text("ImageID,ImageWidth,ImageHeight,PredictionString\nc,,,\na,,,\nb,,,\n")
    write_shard(tmp_path / "L0.csv", [("a", 10, 20, "/m/leafA 0.5 LA"), ("b", 30, 40, "")])
    write_shard(tmp_path / "L1.csv", [("c", 50, 60, "/m/leafB 0.4 LB /m/leafC 0.3 LC")])
    write_shard(tmp_path / "M0.csv", [("a", 10, 20, "/m/P1 0.9 PA"), ("b", 30, 40, "")])
    write_shard(tmp_path / "M1.csv", [("c", 50, 60, "")])
    out = tmp_path / "submission.csv"
    n = combine(
        image_list,
        [tmp_path / "L0.csv", tmp_path / "L1.csv"],
        [tmp_path / "M0.csv", tmp_path / "M1.csv"],
        out,
    )
    assert n == 3
    assert out.read_text() == (
        f"{HEADER}\n"
        "c,50,60,/m/leafB 0.4 LB /m/leafC 0.3 LC\n"
        "a,10,20,/m/leafA 0.5 LA /m/P1 0.9 PA\n"
        "b,30,40,\n"
    )


def test_combine_errors_leave_no_output(tmp_path):
    image_list = tmp_path / "list.csv"
    image_list.write_text("ImageID\na\nb\n")
    write_shard(tmp_path / "L.csv", [("a", 10, 20, ""), ("b", 10, 20, "")])
    write_shard(tmp_path / "M.csv", [("a", 10, 20, "")])
    out = tmp_path / "sub.csv"
    with pytest.raises(InputError, match=r"list.csv: row 3 / b: not in the merged shards"):
        combine(image_list, [tmp_path / "L.csv"], [tmp_path / "M.csv"], out)
    assert not out.exists()
    write_shard(tmp_path / "M.csv", [("a", 10, 20, ""), ("b", 10, 21, "")])
    with pytest.raises(InputError, match=r"row 3 / b: size 10x20 in .*L.csv row 3 but 10x21"):
        combine(image_list, [tmp_path / "L.csv"], [tmp_path / "M.csv"], out)
    write_shard(tmp_path / "M2.csv", [("b", 10, 20, "")])
    with pytest.raises(InputError, match=r"M2.csv: row 2 / b: ImageID also in .*M.csv row 3"):
        combine(image_list, [tmp_path / "L.csv"], [tmp_path / "M.csv", tmp_path / "M2.csv"], out)
    write_shard(tmp_path / "M.csv", [("a", 10, 20, ""), ("b", 10, 20, ""), ("z", 1, 1, "")])
    with pytest.raises(InputError, match=r"M.csv: row 4 / z: merged image not in the image list"):
        combine(image_list, [tmp_path / "L.csv"], [tmp_path / "M.csv"], out)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".sub.csv")]


def test_rle_set_areas_boxes_and_ious():
    rng = np.random.default_rng(5)
    masks = [rng.random((17, 23)) < p for p in (0.1, 0.3, 0.5, 0.7, 0.9)] + [np.zeros((17, 23))]
    counts = [counts_of(m) for m in masks]
    rles = RleSet(counts, 17, 23)
    assert rles.areas.tolist() == [int(m.sum()) for m in masks]
    ys, xs = np.nonzero(masks[0])
    assert rles.boxes[0].tolist() == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    ious = rles.ious([0], [1, 2, 3, 4, 5])[0]
    for j in range(1, 6):
        inter = (masks[0] & masks[j].astype(bool)).sum()
        union = (masks[0] | masks[j].astype(bool)).sum()
        assert ious[j - 1] == pytest.approx(inter / union)
    with pytest.raises(ValueError, match="mask 2 is not a valid COCO RLE"):
        RleSet([counts[0], counts[1][:-1] + b"a"], 17, 23)


# ---------------------------------------------------------------- CLIs end to end


def run_script(name, argv):
    import importlib.util

    from oidseg.errors import run_cli

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return run_cli(module.main, [str(a) for a in argv])


def test_scripts_chain_is_deterministic(tmp_path, classes_json):
    det, _ = detection_shard(tmp_path, "leaf.pkl")
    parent = {
        "format": "oidseg-detections/1",
        "classes": ["/m/P1", "/m/P3"],
        "images": [
            {
                "img_id": "img1",
                "width": 8,
                "height": 6,
                "labels": np.array([0, 1]),
                "scores": np.array([0.95, 0.2], np.float32),
                "bboxes": np.zeros((2, 4), np.float32),
                "masks": [counts_of(strip(6, 8, 1, 4)), counts_of(strip(6, 8, 0, 8))],
            },
            {
                "img_id": "img2",
                "width": 5,
                "height": 3,
                "labels": np.zeros(0, np.int64),
                "scores": np.zeros(0, np.float32),
                "bboxes": np.zeros((0, 4), np.float32),
                "masks": [],
            },
        ],
    }
    (tmp_path / "parent.pkl").write_bytes(pickle.dumps(parent))
    image_list = tmp_path / "list.csv"
    image_list.write_text("ImageID\nimg2\nimg1\n")
    outputs = []
    for run in ("a", "b"):
        o = tmp_path / run
        steps = [
            ("convert", ["--detections", det, "--out", o / "leaf.csv"]),
            ("convert", ["--detections", tmp_path / "parent.pkl", "--out", o / "parent.csv"]),
            (
                "expand",
                [
                    "--input",
                    o / "leaf.csv",
                    "--classes-json",
                    classes_json,
                    "--parents-only",
                    "--out",
                    o / "leaf_exp.csv",
                ],
            ),
            (
                "expand",
                [
                    "--input",
                    o / "parent.csv",
                    "--classes-json",
                    classes_json,
                    "--score-thr",
                    "0",
                    "--out",
                    o / "parent_exp.csv",
                ],
            ),
            (
                "merge",
                [
                    "--inputs",
                    o / "leaf_exp.csv",
                    o / "parent_exp.csv",
                    "--iou",
                    "0.5",
                    "--score-thr",
                    "0",
                    "--out",
                    o / "merged.csv",
                ],
            ),
            (
                "combine",
                [
                    "--image-list",
                    image_list,
                    "--leaf",
                    o / "leaf.csv",
                    "--merged",
                    o / "merged.csv",
                    "--out",
                    o / "submission.csv",
                ],
            ),
            (
                "validate_submission",
                [
                    "--submission",
                    o / "submission.csv",
                    "--image-list",
                    image_list,
                    "--classes-json",
                    classes_json,
                    "--out",
                    o / "submission.ok",
                ],
            ),
        ]
        for name, argv in steps:
            assert run_script(name, argv) == 0, name
        outputs.append({p.name: p.read_bytes() for p in sorted(o.iterdir()) if p.suffix == ".csv"})
    assert outputs[0] == outputs[1]
    sub = outputs[0]["submission.csv"].decode().splitlines()
    assert [line.split(",")[0] for line in sub[1:]] == ["img2", "img1"]
    assert sub[1] == "img2,5,3,"
    parts = sub[2].split(",")[3].split(" ")
    # leaf triples first, then the merged ones in input order (leaf expansion
    # first): the parent model's P1 0.95 (same mask) beats leafC's P1 copy 0.9;
    # its P3/G 0.2 (IoU 30/48 with leafF's mask) beat leafF's 0.000001 copies
    assert list(zip(parts[0::3], parts[1::3])) == [
        ("/m/leafC", "0.900000"),
        ("/m/leafF", "0.000001"),
        ("/m/P2", "0.900000"),
        ("/m/P1", "0.950000"),
        ("/m/P3", "0.200000"),
        ("/m/G", "0.200000"),
    ]
    # a missing input gives exit status 2 and no output
    assert (
        run_script(
            "merge",
            [
                "--inputs",
                tmp_path / "a" / "leaf_exp.csv",
                tmp_path / "nope.csv",
                "--out",
                tmp_path / "x.csv",
            ],
        )
        == 2
    )
    assert not (tmp_path / "x.csv").exists()
