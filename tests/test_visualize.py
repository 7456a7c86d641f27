"""Masks drawn on images (oidseg/visualize.py, scripts/visualize.py) and the
precision-recall curves (evaluate.py --out-pr, plot_report.py --pr)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from oidseg import kaggle, metric
from oidseg import visualize as vis
from oidseg.demo import FILES, DemoSizes, generate_demo
from oidseg.errors import InputError, run_cli
from oidseg.hierarchy import load_hierarchy

REPO = Path(__file__).resolve().parents[1]
SIZES = DemoSizes(n_train=4, n_validation=6, n_v5test=1, n_test=3)


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


VISUALIZE = load_script("visualize")
EVALUATE = load_script("evaluate")
PLOT_REPORT = load_script("plot_report")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vis_demo")
    generate_demo(root / "demo", seed=3, sizes=SIZES)
    return root / "demo"


def encoded(mask: np.ndarray) -> str:
    return kaggle.encode_mask(metric.encode_mask(mask)["counts"])


class Case:
    """A private copy of the demo with a submission of one rectangle mask on
    the first held-out image (a class absent from its ground truth) and a
    black image, so that the mask's pixels have a known colour."""

    def __init__(self, demo: Path, root: Path):
        self.root = root
        self.demo = shutil.copytree(demo, root / "demo")
        self.hierarchy = load_hierarchy(self.demo / FILES["hierarchy"], self.demo / FILES["classes"])
        masks = pd.read_csv(self.demo / FILES["val_masks"])
        bbox = pd.read_csv(self.demo / FILES["val_bbox"])
        self.image_id = sorted(masks["ImageID"])[0]
        (root / "heldout.csv").write_text(f"ImageID\n{self.image_id}\n")
        present = set(masks.loc[masks["ImageID"] == self.image_id, "LabelName"]) | \
            set(bbox.loc[bbox["ImageID"] == self.image_id, "LabelName"])
        self.label = next(c for c in self.hierarchy.leaf_classes if c not in present)
        path = self.demo / "images" / "validation" / f"{self.image_id}.jpg"
        width, height = Image.open(path).size
        Image.new("RGB", (width, height)).save(path, quality=100)  # black
        self.mask = np.zeros((height, width), dtype=bool)
        self.mask[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = True
        empty = np.zeros_like(self.mask)  # submitted, but nothing to draw
        self.write_val(f"{self.label} 0.900000 {encoded(self.mask)} {self.label} 0.950000 {encoded(empty)}")
        test_ids = pd.read_csv(self.demo / FILES["test_list"])["ImageID"].tolist()
        lines = []
        for image_id in test_ids:
            w, h = Image.open(self.demo / "images" / "test" / f"{image_id}.jpg").size
            square = np.zeros((h, w), dtype=bool)
            square[: h // 2, : w // 2] = True
            lines.append(f"{image_id},{w},{h},{self.label} 0.800000 {encoded(square)}")
        self.test_ids = test_ids
        (root / "test.csv").write_text(kaggle.HEADER + "\n" + "\n".join(lines) + "\n")

    def write_val(self, predictions: str) -> None:
        height, width = self.mask.shape
        (self.root / "val.csv").write_text(
            f"{kaggle.HEADER}\n{self.image_id},{width},{height},{predictions}\n")

    def args(self, **overrides) -> list[str]:
        d = self.demo
        zips = sorted(str(p) for p in (d / "masks").glob("challenge-2019-validation-masks-*.zip"))
        values = {
            "--hierarchy": str(d / FILES["hierarchy"]), "--classes": str(d / FILES["classes"]),
            "--masks-csv": str(d / FILES["val_masks"]), "--bbox-csv": str(d / FILES["val_bbox"]),
            "--labels-csv": str(d / FILES["val_labels"]),
            "--val-images": str(d / "images" / "validation"),
            "--image-ids": str(self.root / "heldout.csv"),
            "--val-submission": str(self.root / "val.csv"),
            "--test-submission": str(self.root / "test.csv"),
            "--test-images": str(d / "images" / "test"),
            "--n-images": "1", "--n-test-images": "2", "--score-thr": "0.5",
            "--out-val": str(self.root / "fig" / "val.png"),
            "--out-test": str(self.root / "fig" / "test.png"),
        }
        values.update(overrides)
        return [x for k, v in values.items() for x in (k, v)] + ["--masks", *zips]

    @property
    def colour(self) -> tuple[int, int, int]:
        return vis.class_colours(self.hierarchy.classes)[self.label]


@pytest.fixture()
def case(demo, tmp_path) -> Case:
    return Case(demo, tmp_path)


def count_colour(png: Path, colour, tol: int = 6) -> int:
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int((np.abs(pixels - np.asarray(colour)).max(axis=2) <= tol).sum())


# --------------------------------------------------------------------------- drawing


def test_every_class_has_its_own_colour():
    classes = [f"/m/{k:04d}" for k in range(300)]
    colours = vis.class_colours(classes)
    assert len(set(colours.values())) == 300
    assert vis.class_colours(classes[:20]) == {c: colours[c] for c in classes[:20]}


def test_predicted_mask_pixels_carry_the_class_colour():
    image = np.full((40, 50, 3), 100, dtype=np.uint8)
    mask = np.zeros((40, 50), dtype=bool)
    mask[10:30, 5:25] = True
    colours = {"/m/a": (250, 10, 10)}
    out = vis.draw_masks(image, [vis.Instance("/m/a", mask, score=0.9)], colours)
    inside = out[12:28, 7:23].reshape(-1, 3)
    assert (inside == vis.blend(np.array([[100, 100, 100]], np.uint8), (250, 10, 10))).all()
    assert tuple(out[10, 10]) == (250, 10, 10)  # outline in the full colour
    outside = np.ones((40, 50), dtype=bool)
    outside[9:31, 4:26] = False
    assert (out[outside] == 100).all()
    assert (image == 100).all()  # input untouched


def test_held_out_images_with_mask_ground_truth_come_first():
    ids = ["a", "b", "c", "d", "e"]
    assert vis.choose_images(ids, {"b", "d"}.__contains__, 3) == ["b", "d", "a"]
    assert vis.choose_images(ids, {"b", "d"}.__contains__, 10) == ["b", "d", "a", "c", "e"]


def test_figures_show_the_submitted_masks_in_their_class_colour(case):
    assert run_cli(VISUALIZE.main, case.args()) == 0
    val, test = case.root / "fig" / "val.png", case.root / "fig" / "test.png"
    # 1 pair: 2 panels of PANEL_INCHES x DPI; 2 test panels
    side = round(vis.PANEL_INCHES * vis.DPI)
    height = round((vis.PANEL_INCHES + 0.4) * vis.DPI)
    assert Image.open(val).size == (2 * side, height)
    assert Image.open(test).size == (2 * side, height)
    # the mask on a black image: MASK_ALPHA x the class colour, over many pixels
    expected = vis.blend(np.zeros((1, 3), np.uint8), case.colour)[0]
    drawn = count_colour(val, expected)
    assert drawn > 0.3 * case.mask.sum() * (side / max(case.mask.shape)) ** 2 * 0.5

    # below the score threshold: not drawn, the colour is gone
    assert run_cli(VISUALIZE.main, case.args(**{"--score-thr": "0.95"})) == 0
    assert count_colour(val, expected) < drawn / 20


def test_test_panels_prefer_images_with_a_mask_above_the_threshold(case):
    text = (case.root / "test.csv").read_text().splitlines()
    first = text[1].split(",")
    text[1] = ",".join(first[:3] + [""])  # the first test image: no prediction
    (case.root / "test.csv").write_text("\n".join(text) + "\n")
    items = vis.first_rows_with_predictions(case.root / "test.csv", 2,
                                            case.hierarchy.classes, 0.5)
    assert [i.image_id for i in items] == case.test_ids[1:3]
    items = vis.first_rows_with_predictions(case.root / "test.csv", 3,
                                            case.hierarchy.classes, 0.5)
    assert [i.image_id for i in items] == case.test_ids[1:3] + case.test_ids[:1]


def test_ground_truth_group_of_and_box_only_are_boxes(demo):
    hierarchy = load_hierarchy(demo / FILES["hierarchy"], demo / FILES["classes"])
    bbox = pd.read_csv(demo / FILES["val_bbox"])
    masks = pd.read_csv(demo / FILES["val_masks"])
    zips = sorted((demo / "masks").glob("challenge-2019-validation-masks-*.zip"))
    ids = sorted(set(bbox["ImageID"]))
    gt = metric.load_ground_truth(demo / FILES["val_masks"], demo / FILES["val_bbox"],
                                  demo / FILES["val_labels"], hierarchy, zips,
                                  demo / "images" / "validation", ids)
    n_boxes = n_masks = 0
    for k in range(len(gt.image_ids)):
        for inst in vis.ground_truth_instances(gt, k):
            assert (inst.box is not None) == (inst.group_of or inst.mask is None)
            n_boxes += inst.box is not None
            n_masks += inst.mask is not None
    assert n_masks == len(masks)
    assert n_boxes >= int((bbox["IsGroupOf"] == 1).sum()) > 0  # the demo has group-of rows


# --------------------------------------------------------------------------- bad input


def test_unknown_class_in_the_csv_is_a_clear_error(case, capsys):
    case.write_val(f"/m/nope 0.900000 {encoded(case.mask)}")
    assert run_cli(VISUALIZE.main, case.args()) == 2
    err = capsys.readouterr().err
    assert "val.csv: row 2" in err and case.image_id in err and "unknown class '/m/nope'" in err
    assert not (case.root / "fig").exists() or not any((case.root / "fig").iterdir())


def test_missing_image_is_a_clear_error(case, capsys):
    gone = case.demo / "images" / "test" / f"{case.test_ids[0]}.jpg"
    gone.unlink()
    assert run_cli(VISUALIZE.main, case.args()) == 2
    err = capsys.readouterr().err
    assert str(gone) in err and "image is missing" in err
    assert not (case.root / "fig").exists() or not any((case.root / "fig").iterdir())


def test_bad_mask_is_a_clear_error(case, capsys):
    case.write_val(f"{case.label} 0.900000 bm90IHpsaWI=")
    assert run_cli(VISUALIZE.main, case.args()) == 2
    err = capsys.readouterr().err
    assert "val.csv: row 2" in err and "detection 1" in err
    # an RLE of another size is refused before pycocotools decodes it
    wide = np.ones((case.mask.shape[0], case.mask.shape[1] + 3), dtype=bool)
    case.write_val(f"{case.label} 0.900000 {encoded(case.mask)} {case.label} 0.800000 {encoded(wide)}")
    assert run_cli(VISUALIZE.main, case.args()) == 2
    err = capsys.readouterr().err
    assert "val.csv: row 2" in err and "detection 2: EncodedMask RLE covers" in err


# --------------------------------------------------------------------------- PR curves


def test_scorer_writes_the_pr_arrays_its_ap_comes_from(case, tmp_path):
    truth = pd.read_csv(case.demo / FILES["val_masks"])
    ids = sorted(set(truth["ImageID"]))
    (tmp_path / "ids.csv").write_text("ImageID\n" + "\n".join(ids) + "\n")
    # every ground-truth mask submitted twice: a TP and a duplicate FP
    zips = sorted(str(p) for p in (case.demo / "masks").glob("challenge-2019-validation-masks-*.zip"))
    source = metric.MaskSource(zips)
    rows = []
    for image_id, group in truth.groupby("ImageID"):
        w, h = Image.open(case.demo / "images" / "validation" / f"{image_id}.jpg").size
        parts = []
        for k, (name, label) in enumerate(zip(group["MaskPath"], group["LabelName"])):
            rle = metric.load_mask_rle(source.read(name), name, h, w)
            text = kaggle.encode_mask(rle["counts"])
            parts += [f"{label} {0.9 - 0.01 * k:.6f} {text}", f"{label} 0.100000 {text}"]
        rows.append(f"{image_id},{w},{h}," + " ".join(parts))
    source.close()
    (tmp_path / "sub.csv").write_text(kaggle.HEADER + "\n" + "\n".join(rows) + "\n")
    d = case.demo
    out = tmp_path / "out"
    assert run_cli(EVALUATE.main, [
        "--submission", str(tmp_path / "sub.csv"), "--hierarchy", str(d / FILES["hierarchy"]),
        "--classes", str(d / FILES["classes"]), "--masks-csv", str(d / FILES["val_masks"]),
        "--bbox-csv", str(d / FILES["val_bbox"]), "--labels-csv", str(d / FILES["val_labels"]),
        "--masks", *zips, "--images", str(d / "images" / "validation"),
        "--image-ids", str(tmp_path / "ids.csv"), "--out-json", str(out / "s.json"),
        "--out-csv", str(out / "s.csv"), "--out-pr", str(out / "s.pr.npz")]) == 0
    summary = json.loads((out / "s.json").read_text())
    curves = vis.read_pr_curves(out / "s.pr.npz")
    assert curves.classes == [r["LabelName"] for r in summary["per_class"]]
    checked = 0
    for k, row in enumerate(summary["per_class"]):
        assert curves.num_gt[k] == row["num_gt"]
        if row["AP"] is None:
            assert curves.precision[k].size == 0
            continue
        assert curves.precision[k].size == row["num_scored"]
        assert metric.average_precision(curves.precision[k], curves.recall[k]) == \
            pytest.approx(row["AP"], abs=1e-6)
        if row["num_scored"]:
            assert curves.recall[k][-1] == pytest.approx(row["num_tp"] / row["num_gt"])
        # leaf classes: the duplicates (score 0.1) come last, all false positives
        if row["kind"] == "leaf" and row["num_gt"]:
            n = row["num_gt"]
            assert np.allclose(curves.precision[k][:n], 1.0)
            assert np.allclose(curves.precision[k][-1], n / (2 * n))
            checked += 1
    assert checked > 0

    # plot_report: the PR figure, for the classes with the most ground truth
    top = curves.top_classes(3)
    assert list(curves.num_gt[top]) == sorted(curves.num_gt[curves.num_gt > 0], reverse=True)[:3]
    assert run_cli(PLOT_REPORT.main, [
        "--per-class", str(out / "s.csv"), "--out-ap", str(out / "ap.png"),
        "--out-loss", str(out / "loss.png"), "--pr", str(out / "s.pr.npz"),
        "--n-pr-classes", "3", "--out-pr", str(out / "pr.png")]) == 0
    assert Image.open(out / "pr.png").size == (900, 260)


def test_bad_pr_file_is_a_clear_error_before_any_figure(tmp_path, capsys):
    (tmp_path / "pr.npz").write_bytes(b"not a zip")
    (tmp_path / "pc.csv").write_text("LabelName,DisplayName,AP,num_gt,kind\n/m/a,A,0.5,1,leaf\n")
    assert run_cli(PLOT_REPORT.main, [
        "--per-class", str(tmp_path / "pc.csv"), "--out-ap", str(tmp_path / "ap.png"),
        "--out-loss", str(tmp_path / "loss.png"), "--pr", str(tmp_path / "pr.npz"),
        "--out-pr", str(tmp_path / "out.png")]) == 2
    assert "pr.npz: not a precision-recall .npz" in capsys.readouterr().err
    assert not (tmp_path / "ap.png").exists()


# --------------------------------------------------------------------------- workflow


@pytest.mark.workflow
@pytest.mark.slow
def test_tiny_run_writes_the_figures(tiny_run):
    import yaml

    config = yaml.safe_load((REPO / "config.yaml").read_text())["report"]
    config.update(yaml.safe_load((REPO / "configs/run/tiny.yaml").read_text()).get("report", {}))
    val = tiny_run / "results/figures/predictions_val.png"
    test = tiny_run / "results/figures/predictions_test.png"
    pr = tiny_run / "results/eval/pr_curves.png"
    heldout = pd.read_csv(tiny_run / "results/annotations/heldout_val.csv")
    pairs = min(config["n_images"], len(heldout))
    per_row = min(VISUALIZE.PAIRS_PER_ROW, pairs)
    rows = -(-pairs // per_row)
    assert Image.open(val).size == (round(2 * per_row * vis.PANEL_INCHES * vis.DPI),
                                    round((rows * vis.PANEL_INCHES + 0.4) * vis.DPI))
    n_test = min(config["n_test_images"], len(pd.read_csv(tiny_run / "results/submission.csv")))
    per_row = min(VISUALIZE.TEST_PER_ROW, n_test)
    rows = -(-n_test // per_row)
    assert Image.open(test).size == (round(per_row * vis.PANEL_INCHES * vis.DPI),
                                     round((rows * vis.PANEL_INCHES + 0.4) * vis.DPI))
    assert Image.open(pr).size[0] > 0
    log = (tiny_run / "logs/visualize.log").read_text()
    assert f"{pairs} held-out images" in log


@pytest.mark.workflow
def test_figures_target_draws_what_the_report_section_says(tmp_path):
    from wf import job_counts, new_workdir, snakemake

    workdir = new_workdir(tmp_path)
    (workdir / "r.yaml").write_text("report:\n  n_images: 3\n  score_thr: 0.25\n  n_pr_classes: 5\n")
    proc = snakemake("-n", "-p", "--cores", "2", "figures", "--configfile", "r.yaml", cwd=workdir)
    counts = job_counts(proc.stdout)
    assert counts["visualize"] == 1 and counts["plot_report"] == 1 and counts["figures"] == 1
    assert counts["combine"] == 2  # the figures need both submissions
    text = proc.stdout
    assert "--n-images 3 --n-test-images 8 --score-thr 0.25" in text
    assert "--n-pr-classes 5" in text and "--out-pr results/eval/final.pr.npz" in text
    (workdir / "bad.yaml").write_text("report:\n  n_images: 0\n")
    proc = snakemake("-n", "--cores", "2", "figures", "--configfile", "bad.yaml", cwd=workdir, check=False)
    assert proc.returncode != 0 and "n_images" in proc.stdout + proc.stderr
