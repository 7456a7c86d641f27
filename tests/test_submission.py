"""Submission validator: accepts a good submission, names the first bad row."""

from __future__ import annotations

import base64
import importlib.util
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from oidseg.errors import InputError
from oidseg.kaggle import HEADER, encode_mask
from oidseg.submission import validate_submission

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {"/m/a", "/m/b", "/m/P"}


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def encoded(h: int, w: int, lo: int = 1, hi: int = 3) -> str:
    m = np.zeros((h, w), dtype=np.uint8)
    m[:, lo:hi] = 1
    return encode_mask(mask_utils.encode(np.asfortranarray(m))["counts"])


def good_rows() -> list[str]:
    return [
        f"img1,8,6,/m/a 0.900000 {encoded(6, 8)} /m/P 0.000001 {encoded(6, 8, 0, 8)}",
        "img2,5,3,",
        f"img3,4,7,/m/b 1.000000 {encoded(7, 4)}",
    ]


@pytest.fixture
def files(tmp_path):
    image_list = tmp_path / "list.csv"
    image_list.write_text("ImageID\nimg1\nimg2\nimg3\n")
    classes_json = tmp_path / "classes.json"
    classes_json.write_text(json.dumps({"classes": sorted(CLASSES), "ancestors": {}}))
    return tmp_path, image_list, classes_json


def write(path: Path, rows: list[str], header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_valid_submission_passes_and_writes_flag(files):
    tmp, image_list, classes_json = files
    sub = write(tmp / "sub.csv", good_rows()[::-1])  # any order is fine
    summary = validate_submission(sub, image_list, CLASSES)
    assert (summary.images, summary.images_with_predictions, summary.predictions) == (3, 2, 3)
    ok = tmp / "out" / "sub.ok"
    script = load_script("validate_submission")
    script.main(
        [
            "--submission",
            str(sub),
            "--image-list",
            str(image_list),
            "--classes-json",
            str(classes_json),
            "--out",
            str(ok),
        ]
    )
    assert "images: 3" in ok.read_text()


def corrupt_zlib(h: int, w: int) -> str:
    raw = bytearray(base64.b64decode(encoded(h, w)))
    raw[len(raw) // 2] ^= 0x55
    return base64.b64encode(bytes(raw)).decode()


BAD_CASES = {
    "missing image": ([0, 2], None, r"ImageID img2 \(row 3 of .*\) is missing"),
    "duplicate image": ([0, 1, 2, 1], None, r"row 5 / img2: duplicate ImageID \(first at row 3\)"),
    "unlisted image": ([0, 1, 2], "imgX,4,4,", r"row 5 / imgX: ImageID not in the image list"),
    "unknown label": (
        [0, 1],
        f"img3,4,7,/m/zzz 0.5 {encoded(7, 4)}",
        r"row 4 / img3: prediction 1 \(/m/zzz\): unknown class '/m/zzz'",
    ),
    "confidence above 1": (
        [0, 1],
        f"img3,4,7,/m/b 1.000001 {encoded(7, 4)}",
        r"row 4 / img3: prediction 1 \(/m/b\): Confidence 1.000001 outside",
    ),
    "negative confidence": (
        [0, 1],
        f"img3,4,7,/m/b -0.1 {encoded(7, 4)}",
        r"row 4 / img3: .*outside",
    ),
    "nan confidence": ([0, 1], f"img3,4,7,/m/b nan {encoded(7, 4)}", r"row 4 / img3: .*not a number"),
    "text confidence": (
        [0, 1],
        f"img3,4,7,/m/b high {encoded(7, 4)}",
        r"row 4 / img3: .*not a number",
    ),
    "mask of wrong size": (
        [0, 1],
        f"img3,4,7,/m/b 0.5 {encoded(7, 4)} /m/a 0.5 {encoded(5, 5)}",
        r"row 4 / img3: prediction 2 \(/m/a\): mask covers 25 pixels",
    ),
    "mask one pixel short": (
        [0, 1],
        f"img3,4,7,/m/b 0.5 {encoded(6, 4)}",
        r"row 4 / img3: prediction 1 \(/m/b\): mask covers 24 pixels",
    ),
    "corrupt base64": ([0, 1], "img3,4,7,/m/b 0.5 ab$d", r"row 4 / img3: .*not valid base64"),
    "corrupt zlib": (
        [0, 1],
        f"img3,4,7,/m/b 0.5 {corrupt_zlib(7, 4)}",
        r"row 4 / img3: .*not valid zlib",
    ),
    "not an RLE": (
        [0, 1],
        f"img3,4,7,/m/b 0.5 {base64.b64encode(zlib.compress(b'0 1')).decode()}",
        r"row 4 / img3: prediction 1 \(/m/b\): EncodedMask is not a valid COCO RLE",
    ),
    "incomplete triple": (
        [0, 1],
        "img3,4,7,/m/b 0.5",
        r"row 4 / img3: PredictionString has 2 fields",
    ),
    "bad size": ([0, 1], "img3,0,7,", r"row 4 / img3: ImageWidth '0' is not a positive integer"),
    "three fields": ([0, 1], "img3,4,7", r"row 4 / img3: 3 fields, expected 4"),
    # issue 18: an extra field used to read "EncodedMask is not valid base64"
    "five fields": (
        [0, 1],
        f"img3,4,7,/m/b 0.5 {encoded(7, 4)},x",
        r"row 4 / img3: 5 fields, expected 4 \(ImageID,ImageWidth,ImageHeight,PredictionString\)",
    ),
    "spaced ImageID": ([0, 2], " img2,5,3,", r"row 4: ImageID ' img2' is not an ImageID"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_validator_rejects_and_names_row(files, case):
    tmp, image_list, classes_json = files
    keep, extra, pattern = BAD_CASES[case]
    rows = [good_rows()[i] for i in keep] + ([extra] if extra else [])
    sub = write(tmp / "sub.csv", rows)
    with pytest.raises(InputError, match=pattern):
        validate_submission(sub, image_list, CLASSES)
    ok = tmp / "sub.ok"
    script = load_script("validate_submission")
    from oidseg.errors import run_cli

    argv = [
        "--submission",
        str(sub),
        "--image-list",
        str(image_list),
        "--classes-json",
        str(classes_json),
        "--out",
        str(ok),
    ]
    assert run_cli(script.main, argv) == 2
    assert not ok.exists()


def test_wrong_size_mask_message(files):
    tmp, image_list, _ = files
    rows = good_rows()[:2] + [f"img3,4,7,/m/b 0.5 {encoded(7, 4)} /m/a 0.5 {encoded(8, 4)}"]
    sub = write(tmp / "sub.csv", rows)
    with pytest.raises(
        InputError,
        match=r"row 4 / img3: prediction 2 \(/m/a\): mask covers 32 "
        r"pixels, expected ImageHeight x ImageWidth = 7 x 4 = 28",
    ):
        validate_submission(sub, image_list, CLASSES)


def test_bad_header(files):
    tmp, image_list, _ = files
    sub = write(
        tmp / "sub.csv", good_rows(), header="ImageId,ImageWidth,ImageHeight,PredictionString"
    )
    with pytest.raises(InputError, match=r"sub.csv: row 1: header"):
        validate_submission(sub, image_list, CLASSES)
