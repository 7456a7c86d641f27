"""The `predict` target (issue 21): the tiny run's trained ensembles on a
folder of the demo images plus odd ones, and the pieces it is made of.

The workflow tests share the session's tiny run (conftest.py) and run the
target once in it (2 shards), then check the outputs, the equality with the
test shards, the rotated image, COCO evaluation and what a changed folder
reruns.
"""

from __future__ import annotations

import csv
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image, ImageOps

from oidseg.errors import InputError
from oidseg.images import apply_orientation, read_upright
from wf import REPO, job_counts, snakemake

PREDICT_CFG = "predict_test.yaml"


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _odd_images(folder: Path, source: Path) -> None:
    """The odd ones, all made from one demo image (``source``)."""
    odd = folder / "odd"
    (odd / "empty").mkdir(parents=True)
    pixels = cv2.imread(str(source), cv2.IMREAD_COLOR)  # what predict reads for `source`
    rgb = Image.fromarray(pixels[:, :, ::-1])
    # stored sideways, EXIF orientation 6 turns it upright; PNG: lossless, so the
    # upright pixels are exactly `source`'s
    sideways = Image.fromarray(np.ascontiguousarray(np.rot90(pixels[:, :, ::-1], 1)))
    exif = sideways.getexif()
    exif[0x0112] = 6
    sideways.save(odd / "rotated.png", exif=exif)
    sideways.save(odd / "phone.jpg", exif=exif, quality=92)  # a phone photo
    rgb.convert("L").save(odd / "gray.png")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(160)
    rgba.save(odd / "rgba.png")
    Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257).save(odd / "gray16.png")
    rgb.convert("CMYK").save(odd / "cmyk.jpg", quality=95)
    rgb.convert("P").save(odd / "palette.png")
    (odd / "notes.txt").write_text("not an image\n")


@pytest.fixture(scope="module")
def folder(tiny_run: Path, tmp_path_factory) -> Path:
    """The demo test images, two held-out validation images with mask ground
    truth, and the odd ones."""
    folder = tmp_path_factory.mktemp("my photos")  # a space in the path
    (folder / "test").mkdir()
    for path in sorted((tiny_run / "data/demo/images/test").glob("*.jpg")):
        shutil.copy(path, folder / "test" / path.name)
    masks_csv = tiny_run / "data/demo/challenge-2019-validation-segmentation-masks.csv"
    with_masks = {r["ImageID"] for r in _csv(masks_csv)}
    heldout = [r["ImageID"] for r in _csv(tiny_run / "results/annotations/heldout_val.csv")]
    val = [image_id for image_id in heldout if image_id in with_masks][:2]
    (folder / "val").mkdir()
    for image_id in val:
        shutil.copy(tiny_run / f"data/demo/images/validation/{image_id}.jpg", folder / "val" / f"{image_id}.jpg")
    _odd_images(folder, folder / "val" / f"{val[0]}.jpg")
    return folder


@pytest.fixture(scope="module")
def predicted(tiny_run: Path, folder: Path) -> Path:
    (tiny_run / PREDICT_CFG).write_text(yaml.safe_dump(
        {"predict": {"images": str(folder), "shards": 2, "draw_thr": 0.05, "report_images": 4}}))
    snakemake("--cores", "2", "predict", "--configfile", "tiny.yaml", PREDICT_CFG, cwd=tiny_run, timeout=1200)
    return tiny_run


def _predict(run: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return snakemake(*args, "--cores", "2", "predict", "--configfile", "tiny.yaml", PREDICT_CFG, cwd=run,
                     check=check)


# --------------------------------------------------------------------- workflow


@pytest.mark.workflow
@pytest.mark.slow
def test_predict_outputs_cover_every_image(predicted: Path, folder: Path):
    out = predicted / "results/predict"
    images = _csv(out / "images.csv")
    files = [r["File"] for r in images]
    expected = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                      if p.is_file() and p.suffix != ".txt")
    assert files == expected  # every JPEG/PNG, odd ones converted, in path order
    assert _csv(out / "skipped.csv") == [{"File": "odd/notes.txt", "Reason": "not a JPEG or PNG file name"}]
    for row in images:  # sizes are the upright pixels'
        pixels = read_upright(folder / row["File"])
        assert (int(row["Width"]), int(row["Height"])) == (pixels.shape[1], pixels.shape[0])
    rows = _csv(out / "predictions.csv")
    assert [r["ImageID"] for r in rows] == [r["ImageID"] for r in images]
    assert (out / "predictions.ok").is_file()
    assert sum(len(r["PredictionString"].split()) for r in rows) > 0
    for row in images:  # one drawing per image, upright, at least 640 pixels on its long side
        drawn = cv2.imread(str(out / "images" / f"{row['File']}.png"))
        w, h = int(row["Width"]), int(row["Height"])
        assert max(drawn.shape[:2]) == max(640, max(w, h)) and (drawn.shape[0] > drawn.shape[1]) == (h > w)
    assert sorted(p.name for p in (out / "images" / "odd").iterdir()) == [
        f"{Path(f).name}.png" for f in files if f.startswith("odd/")]
    assert cv2.imread(str(out / "page.png")) is not None
    log = (predicted / "logs/infer/leaf_predict_00.log").read_text()
    assert "read " in log and "encode " in log and "images/s" in log


@pytest.mark.workflow
@pytest.mark.slow
def test_demo_test_images_equal_the_test_shards(predicted: Path):
    """Same weights, same pixels: the final predictions (ensembles, expansion,
    merge, combine) of the demo test images are the submission's."""
    files = {r["ImageID"]: r["File"] for r in _csv(predicted / "results/predict/images.csv")}
    submission = {r["ImageID"]: r for r in _csv(predicted / "results/submission.csv")}
    compared = 0
    for row in _csv(predicted / "results/predict/predictions.csv"):
        name = files[row["ImageID"]]
        if name.startswith("test/"):
            ref = submission[Path(name).stem]
            assert (row["ImageWidth"], row["ImageHeight"]) == (ref["ImageWidth"], ref["ImageHeight"])
            assert row["PredictionString"] == ref["PredictionString"], name
            compared += 1
    assert compared == len(submission) == 6


@pytest.mark.workflow
@pytest.mark.slow
def test_rotated_image_masks_fit_the_upright_pixels(predicted: Path, folder: Path):
    """odd/rotated.png is val[0] stored sideways with EXIF orientation 6: it is
    predicted upright, so its masks are the upright image's, pixel for pixel;
    the phone JPEG (lossy) is predicted at its upright size."""
    images = {r["File"]: r for r in _csv(predicted / "results/predict/images.csv")}
    rows = {r["ImageID"]: r for r in _csv(predicted / "results/predict/predictions.csv")}
    source = sorted(f for f in images if f.startswith("val/"))[0]
    upright, rotated, phone = (rows[images[f]["ImageID"]] for f in (source, "odd/rotated.png", "odd/phone.jpg"))
    stored = Image.open(folder / "odd/rotated.png").size
    assert (int(rotated["ImageWidth"]), int(rotated["ImageHeight"])) == (stored[1], stored[0])
    assert rotated["PredictionString"] and rotated["PredictionString"] == upright["PredictionString"]
    assert (phone["ImageWidth"], phone["ImageHeight"]) == (upright["ImageWidth"], upright["ImageHeight"])


@pytest.mark.workflow
@pytest.mark.slow
def test_coco_file_loads_and_evaluates_against_the_demo_ground_truth(predicted: Path):
    from pycocotools import mask as mask_util
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    path = predicted / "results/predict/coco.json"
    coco = COCO(str(path))  # the file as a dataset: images, categories, scored masks
    data = json.loads(path.read_text())
    classes = json.loads((predicted / "results/annotations/classes.json").read_text())
    assert [c["mid"] for c in data["categories"]] == classes["classes"]
    assert [c["name"] for c in data["categories"]] == [classes["names"][m] for m in classes["classes"]]
    assert [i["file_name"] for i in data["images"]] == [r["File"] for r in _csv(
        predicted / "results/predict/images.csv")]
    n_masks = sum(len(r["PredictionString"].split()) // 3 for r in _csv(predicted / "results/predict/predictions.csv"))
    assert len(coco.getAnnIds()) == len(data["annotations"]) == n_masks

    # a COCO ground truth of the two validation images from the demo's validation annotations
    val = {i["file_name"]: i for i in data["images"] if i["file_name"].startswith("val/")}
    category = {c["mid"]: c["id"] for c in data["categories"]}
    annotations = []
    for row in _csv(predicted / "data/demo/challenge-2019-validation-segmentation-masks.csv"):
        image = val.get(f"val/{row['ImageID']}.jpg")
        if image is None:
            continue
        mask = cv2.imread(str(predicted / "results/annotations/masks/validation" / row["MaskPath"]), 0)
        mask = cv2.resize(mask, (image["width"], image["height"]), interpolation=cv2.INTER_NEAREST_EXACT) > 0
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        annotations.append({"id": len(annotations) + 1, "image_id": image["id"], "iscrowd": 0,
                            "category_id": category[row["LabelName"]], "segmentation": rle,
                            "area": float(mask_util.area(rle)), "bbox": list(mask_util.toBbox(rle))})
    assert annotations
    truth = COCO()
    truth.dataset = {"images": list(val.values()), "categories": data["categories"], "annotations": annotations}
    truth.createIndex()
    ids = {i["id"] for i in val.values()}
    results = truth.loadRes([a for a in data["annotations"] if a["image_id"] in ids])
    evaluation = COCOeval(truth, results, "segm")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert len(evaluation.stats) == 12 and np.all(evaluation.stats <= 1)


def test_fiftyone_parses_the_coco_file(predicted: Path):
    """FiftyOne's COCO parsing, as its ``COCODetectionDataset`` importer does
    it for each image: every annotation becomes a Detection with our class
    name, score and mask pixels. fiftyone is not in the test environment
    (``pip install fiftyone`` to run this); a FiftyOne Dataset also needs a
    MongoDB, which this test does not."""
    from pycocotools import mask as mask_util

    fouc = pytest.importorskip("fiftyone.utils.coco")
    path = predicted / "results/predict/coco.json"
    data = json.loads(path.read_text())
    _, classes_map, supercategories, images, objects = fouc.load_coco_detection_annotations(str(path))
    assert classes_map == {c["id"]: c["name"] for c in data["categories"]}
    assert sorted(images) == [i["id"] for i in data["images"]]
    raw = {a["id"]: a for a in data["annotations"]}
    parsed = 0
    for image_id, coco_objects in objects.items():
        size = (images[image_id]["width"], images[image_id]["height"])
        for obj in coco_objects:
            det = obj.to_detection(size, classes_map=classes_map, supercategory_map=supercategories,
                                   load_segmentation=True)
            ann = raw[obj.id]
            assert det.label == classes_map[ann["category_id"]] and det.confidence == pytest.approx(ann["score"])
            assert det.mask is not None and int(det.mask.sum()) == int(mask_util.area(ann["segmentation"]))
            parsed += 1
    assert parsed == len(data["annotations"]) > 0


@pytest.mark.workflow
@pytest.mark.slow
def test_a_changed_folder_reruns_one_shard_and_what_follows(predicted: Path, folder: Path):
    assert job_counts(_predict(predicted, "-n").stdout) == {}
    added = folder / "test" / "copy.jpg"
    shutil.copy(next((folder / "test").glob("*.jpg")), added)
    try:
        counts = job_counts(_predict(predicted, "-n").stdout)
    finally:
        added.unlink()
    assert counts == {"predict_list": 1, "infer": 2, "convert": 2, "expand_hierarchy": 2, "merge": 1,
                      "predict_collect": 1, "predict_combine": 1, "predict_validate": 1, "predict_coco": 1,
                      "predict_draw": 1, "predict": 1}
    assert job_counts(_predict(predicted, "-n").stdout) == {}  # back as it ran


@pytest.mark.workflow
def test_empty_missing_or_unset_folder_is_an_error_before_any_job(tiny_run: Path, tmp_path: Path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.md").write_text("no images here\n")
    for value, message in ((str(empty), "no JPEG or PNG image (1 other file)"),
                           (None, "set predict.images")):
        (tiny_run / "predict_bad.yaml").write_text(yaml.safe_dump({"predict": {"images": value}}))
        proc = snakemake("-n", "--cores", "1", "predict", "--configfile", "tiny.yaml", "predict_bad.yaml",
                         cwd=tiny_run, check=False)
        assert proc.returncode != 0 and message in proc.stdout + proc.stderr


# --------------------------------------------------------------------- pieces


def _run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], capture_output=True,
                          text=True, cwd=REPO, timeout=300)


def _small_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    (root / "a").mkdir(parents=True)
    for name in ("a/one.jpg", "two.PNG", "a/three.jpeg"):
        cv2.imwrite(str(root / name), rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / ".hidden.jpg").write_bytes(b"x")
    (root / ".cache").mkdir()
    (root / ".cache" / "x.jpg").write_bytes(b"x")
    (root / "odd {name}.jpg").write_bytes(b"x")
    (root / "data.csv").write_text("a,b\n")
    return root


def test_scan_folder_lists_images_and_skips_the_rest(tmp_path: Path):
    from oidseg.predict import image_id, scan_folder, shard_of

    scan = scan_folder(_small_folder(tmp_path / "f"))
    assert scan.images == ["a/one.jpg", "a/three.jpeg", "broken.jpg", "two.PNG"]
    reasons = dict(scan.skipped)
    assert reasons == {".cache/": "hidden folder, not searched", ".hidden.jpg": "hidden file",
                       "data.csv": "not a JPEG or PNG file name",
                       "odd {name}.jpg": "'{' or '}' in its path (Snakemake cannot take it as an input)"}
    assert [shard_of(p, 3) for p in scan.images] == [shard_of(p, 3) for p in list(scan.images)]
    assert len({shard_of(f"img{i}.jpg", 4) for i in range(40)}) == 4
    ids = [image_id(p) for p in ("holiday/IMG 1.jpg", "a_b.jpg", "a.b.jpg", "été/ü.png")]
    assert all(c.isascii() and (c.isalnum() or c in "_-") for i in ids for c in i)
    assert len(set(ids)) == 4 and ids[0].startswith("holiday_IMG_1_jpg-")
    with pytest.raises(InputError, match="folder is missing"):
        scan_folder(tmp_path / "nope")


def test_unreadable_image_is_an_error_or_skipped(tmp_path: Path):
    from oidseg.predict import collect, list_digest, scan_folder

    root = _small_folder(tmp_path / "f")
    scan = scan_folder(root)
    out = tmp_path / "00.pkl"
    args = ["--folder", str(root), "--shard", "0", "--shards", "1", "--expect", list_digest(scan.images),
            "--out", str(out)]
    proc = _run_script("predict_list.py", *args)
    assert proc.returncode == 2 and "broken.jpg" in proc.stderr and "skip_unreadable" in proc.stderr
    assert not out.exists()
    proc = _run_script("predict_list.py", *args[:-4], "--expect", "0" * 16, "--out", str(out))
    assert proc.returncode == 2 and "the folder changed" in proc.stderr
    assert _run_script("predict_list.py", *args, "--skip-unreadable").returncode == 0
    data = pickle.loads(out.read_bytes())
    assert [r["file"] for r in data["data_list"]] == ["a/one.jpg", "a/three.jpeg", "two.PNG"]
    assert all(r["exif_orientation"] and (r["width"], r["height"]) == (30, 20) for r in data["data_list"])
    assert [s[0] for s in data["skipped"]] == ["broken.jpg"] and "unreadable" in data["skipped"][0][1]
    images, skipped = collect([out], scan, tmp_path / "images.csv", tmp_path / "skipped.csv")
    assert (images, skipped) == (3, 5)
    assert [r["File"] for r in _csv(tmp_path / "skipped.csv")] == [
        ".cache/", ".hidden.jpg", "broken.jpg", "data.csv", "odd {name}.jpg"]


def test_nothing_readable_is_an_error(tmp_path: Path):
    from oidseg.predict import collect, read_shard, scan_folder, write_shard_list

    root = tmp_path / "f"
    root.mkdir()
    (root / "bad.png").write_bytes(b"\x89PNG broken")
    records, skipped = read_shard(root, ["bad.png"], skip_unreadable=True)
    write_shard_list(tmp_path / "00.pkl", records, skipped, shard=0, n_shards=1)
    with pytest.raises(InputError, match="no image to predict: every file is skipped \\(bad.png: unreadable"):
        collect([tmp_path / "00.pkl"], scan_folder(root), tmp_path / "i.csv", tmp_path / "s.csv")
    assert not (tmp_path / "i.csv").exists() and not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_as_pillow_displays_it(tmp_path: Path, orientation: int):
    rng = np.random.default_rng(orientation)
    image = Image.fromarray(rng.integers(0, 255, (12, 20, 3), dtype=np.uint8))
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.png"
    image.save(path, exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert np.array_equal(read_upright(path)[:, :, ::-1], expected)
    assert np.array_equal(apply_orientation(np.asarray(image), orientation), expected)


def test_pixel_formats_are_converted(tmp_path: Path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (16, 24, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "plain.jpg"), rgb[:, :, ::-1])
    # an ordinary JPEG: the pixels the test shards' reader (mmcv) gives
    import mmcv

    assert np.array_equal(read_upright(tmp_path / "plain.jpg"),
                          mmcv.imread(str(tmp_path / "plain.jpg"), flag="color_ignore_orientation"))
    grey16 = (rgb[:, :, 0].astype(np.uint16) * 257)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    assert np.array_equal(read_upright(tmp_path / "g16.png"), np.repeat(rgb[:, :, :1], 3, axis=2))
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 0, np.uint8)])
    rgba[0, 0, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    out = read_upright(tmp_path / "rgba.png")  # over white
    assert (out[1:, 1:] == 255).all() and np.array_equal(out[0, 0], rgb[0, 0, ::-1])
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert np.abs(read_upright(tmp_path / "cmyk.jpg")[:, :, ::-1].astype(int) - rgb).mean() < 12
    Image.fromarray(rgb).save(tmp_path / "x.gif")
    shutil.copy(tmp_path / "x.gif", tmp_path / "gif.png")
    with pytest.raises(InputError, match="gif.png.*GIF image, not JPEG or PNG"):
        read_upright(tmp_path / "gif.png")
