"""One module decides what a valid submission is (issue 13 items 5 and 6):
the validator and the scorer accept the same files and name rows the same
way; RLEs with negative runs, Unicode digits, wrong declared sizes and zlib
bombs are rejected with a clear message."""

from __future__ import annotations

import base64
import importlib.util
import json
import pickle
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from oidseg import metric
from oidseg.errors import InputError, run_cli
from oidseg.kaggle import HEADER, encode_mask, iter_shard, rle_totals
from oidseg.rle import (
    BAD_RUN, BAD_SYNTAX, CHUNK_CHARS, OK, RunCounter, inflate_chunks, parse_runs, rle_length_bound,
)
from oidseg.submission import validate_submission
from oidseg.validity import ImageList, parse_predictions

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {"/m/a", "/m/b"}


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"_v_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def counts_of(mask: np.ndarray) -> bytes:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"]


def coco_string(runs: list[int]) -> bytes:
    """pycocotools' rleToString for arbitrary (also negative) runs."""
    out = bytearray()
    for i, run in enumerate(runs):
        x = run - (runs[i - 2] if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append((c | 0x20 if more else c) + 48)
    return bytes(out)


def kaggle(counts: bytes) -> str:
    return base64.b64encode(zlib.compress(counts, 9)).decode()


def box(h: int, w: int) -> str:
    m = np.zeros((h, w), np.uint8)
    m[1:3, 1:3] = 1
    return encode_mask(counts_of(m))


def write(path: Path, rows: list[str], *, bom: bool = False, trailing: str = "\n") -> Path:
    text = "\n".join([HEADER, *rows]) + trailing
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def gt_of(sizes: dict[str, tuple[int, int]]) -> metric.GroundTruth:
    """Ground truth with the given images (width, height) and no instances."""
    ids = sorted(sizes)
    return metric.GroundTruth(
        image_ids=np.asarray(ids, dtype=object),
        heights=np.asarray([sizes[i][1] for i in ids], dtype=np.int64),
        widths=np.asarray([sizes[i][0] for i in ids], dtype=np.int64),
        inst_image=np.zeros(0, np.int64), inst_label=np.zeros(0, object),
        inst_box=np.zeros((0, 4)), inst_group_of=np.zeros(0, bool), inst_rle=[],
        label_image=np.zeros(0, np.int64), label_name=np.zeros(0, object),
        label_confidence=np.zeros(0, np.int8),
    )


SIZES = {"img1": (8, 6), "img2": (5, 3), "img3": (4, 7)}


@pytest.fixture
def image_list(tmp_path) -> Path:
    path = tmp_path / "list.csv"
    path.write_text("ImageID\n" + "".join(f"{i}\n" for i in SIZES))
    return path


def good_rows() -> list[str]:
    return [f"img1,8,6,/m/a 0.9 {box(6, 8)}", "img2,5,3,", f"img3,4,7,/m/b 1.0 {box(7, 4)}"]


def both_verdicts(sub: Path, image_list: Path, sizes: dict | None = None) -> tuple[str | None, str | None]:
    """(validator error, scorer error), None where the file is accepted. The
    scorer reads the same image list (its ``--image-ids``) and knows the true
    sizes (its ground truth); the validator knows them only with ``sizes``
    (its ``--image-sizes``)."""
    out: list[str | None] = []
    for check in (lambda: validate_submission(sub, image_list, CLASSES, sizes),
                  lambda: metric.read_submission(sub, gt_of(SIZES), CLASSES,
                                                 images=ImageList.read(image_list))):
        try:
            check()
            out.append(None)
        except InputError as exc:
            out.append(str(exc))
    return out[0], out[1]


# --------------------------------------------------------------------------- RLE parsing


def test_parse_runs_matches_pycocotools_and_bound_holds():
    rng = np.random.default_rng(5)
    masks = [rng.random((h, w)) < p for h, w, p in
             zip(rng.integers(1, 40, 200), rng.integers(1, 40, 200), rng.random(200))]
    masks += [np.zeros((5, 7)), np.ones((5, 7)), np.indices((9, 11)).sum(0) % 2 == 1]
    counts = [counts_of(m) for m in masks]
    totals, problems = parse_runs(counts)
    assert (problems == OK).all()
    assert totals.tolist() == [m.size for m in masks]
    # the longest-string bound holds, the checkerboard (all runs 1) comes close
    assert all(len(c) <= rle_length_bound(m.size) for c, m in zip(counts, masks))
    assert len(counts[-1]) >= 0.8 * rle_length_bound(99)


def test_negative_run_is_rejected_even_with_the_right_total():
    # runs 30, -2 sum to 28 = 4 x 7; pycocotools keeps -2 as 2**32 - 2, and the
    # uint32 sum wraps to 28: rle_totals (run sums modulo 2**32) accepted it before
    bad = coco_string([30, -2])
    assert mask_utils.area([{"size": [7, 4], "counts": bad}])[0] == 2**32 - 2  # the wrapped run
    assert rle_totals([bad]).tolist() == [-1]
    assert parse_runs([bad])[1].tolist() == [BAD_RUN]
    # a negative run behind the difference coding (index >= 3), and an empty inner run
    strings = [coco_string([2, 3, 4, -1, 20]), coco_string([2, 0, 26]), coco_string([0, 28])]
    assert parse_runs(strings)[1].tolist() == [BAD_RUN, BAD_RUN, OK]
    assert parse_runs([b"", b"0\x00", b"P"])[1].tolist() == [BAD_SYNTAX] * 3


def test_validator_and_scorer_reject_negative_run(tmp_path, image_list):
    rows = good_rows()[:2] + [f"img3,4,7,/m/b 0.5 {box(7, 4)} /m/a 0.5 {kaggle(coco_string([30, -2]))}"]
    validator, scorer = both_verdicts(write(tmp_path / "s.csv", rows), image_list)
    assert validator == scorer
    assert ("row 4 / img3: prediction 2 (/m/a): EncodedMask is not a valid COCO RLE "
            "(a negative run") in validator


# --------------------------------------------------------------------------- one set of rules


def test_bom_and_trailing_blank_line_accepted_by_both(tmp_path, image_list):
    sub = write(tmp_path / "s.csv", good_rows(), bom=True, trailing="\n\n\r\n")
    assert both_verdicts(sub, image_list) == (None, None)
    dets = metric.read_submission(sub, gt_of(SIZES), CLASSES)
    assert sorted(dets.image_id.tolist()) == ["img1", "img3"]


def test_same_row_numbers_and_messages(tmp_path, image_list):
    # a blank line in the middle keeps its line number: the bad row is line 5
    rows = [good_rows()[0], "", good_rows()[1], f"img3,4,7,/m/b 0.5 {box(7, 5)}"]
    validator, scorer = both_verdicts(write(tmp_path / "s.csv", rows, bom=True), image_list)
    assert validator == scorer
    assert "s.csv: row 5 / img3: prediction 1 (/m/b): mask covers 35 pixels" in validator
    rows = good_rows() + ["img1,8,6,"]
    validator, scorer = both_verdicts(write(tmp_path / "s.csv", rows), image_list)
    assert validator == scorer and "row 5 / img1: duplicate ImageID (first at row 2)" in validator


@pytest.mark.parametrize("text", ["\u00b2", "\u0664", "\uff18", "8\u0660", "+8", " 8", "8.0"])
def test_unicode_and_non_plain_digits_are_not_sizes(tmp_path, image_list, text):
    rows = [f"img1,{text},6,", *good_rows()[1:]]
    sub = write(tmp_path / "s.csv", rows)
    validator, scorer = both_verdicts(sub, image_list)
    assert validator == scorer
    assert f"row 2 / img1: ImageWidth {text!r} is not a positive integer" in validator
    # the expand / merge reader
    with pytest.raises(InputError, match="row 2 / img1: ImageWidth"):
        list(iter_shard(sub))


def test_unicode_digit_in_expand_cli_exits_2(tmp_path):
    sub = write(tmp_path / "s.csv", ["img1,\u0668,6,"])
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"classes": sorted(CLASSES), "ancestors": {}}))
    out = tmp_path / "out.csv"
    argv = ["--input", str(sub), "--classes-json", str(classes), "--out", str(out)]
    assert run_cli(load_script("expand").main, argv) == 2
    assert not out.exists()


@pytest.mark.parametrize("score", ["\u0660.\u0665", "1_0", "nan", "0x1", "\uff10.5"])
def test_confidence_must_be_ascii_decimal(score):
    with pytest.raises(ValueError, match="Confidence"):
        parse_predictions(f"/m/a {score} {box(6, 8)}", 8, 6, CLASSES)


def test_non_utf8_row_names_row_and_offset(tmp_path, image_list):
    sub = write(tmp_path / "s.csv", good_rows())
    data = sub.read_bytes()
    offset = data.index(b"img2") + 3
    sub.write_bytes(data[:offset] + b"\xff" + data[offset + 1:])
    validator, scorer = both_verdicts(sub, image_list)
    assert validator == scorer
    assert f"row 3: not UTF-8 text: byte 0xff at byte offset {offset}" in validator


# --------------------------------------------------------------------------- true sizes


def test_declared_size_must_be_the_true_size(tmp_path, image_list):
    sub = write(tmp_path / "s.csv", good_rows())
    true = dict(SIZES)
    assert validate_submission(sub, image_list, CLASSES, true).images == 3
    true["img3"] = (5, 7)  # the test list says 5 x 7, the row declares 4 x 7
    with pytest.raises(InputError, match=r"row 4 / img3: declared size .* = 4 x 7, but the image is 5 x 7"):
        validate_submission(sub, image_list, CLASSES, true)
    del true["img3"]
    with pytest.raises(InputError, match=r"list.csv: row 4 / img3: no true image size"):
        validate_submission(sub, image_list, CLASSES, true)


def test_validator_cli_image_sizes_from_pickles_and_csv(tmp_path, image_list):
    sub = write(tmp_path / "s.csv", good_rows())
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"classes": sorted(CLASSES), "ancestors": {}}))
    shards = []
    for k, ids in enumerate((["img1", "img2"], ["img3"])):
        records = [{"img_id": i, "img_path": f"x/{i}.jpg", "width": SIZES[i][0],
                    "height": SIZES[i][1] + (1 if i == "img3" else 0), "instances": []}
                   for i in ids]
        shards.append(tmp_path / f"{k:02d}.pkl")
        shards[-1].write_bytes(pickle.dumps({"metainfo": {}, "data_list": records}))
    script = load_script("validate_submission")
    ok = tmp_path / "s.ok"
    base = ["--submission", str(sub), "--image-list", str(image_list),
            "--classes-json", str(classes), "--out", str(ok)]
    assert run_cli(script.main, base) == 0 and ok.exists()  # sizes unknown: not compared
    ok.unlink()
    assert run_cli(script.main, [*base, "--image-sizes", *map(str, shards)]) == 2
    assert not ok.exists()
    sizes_csv = tmp_path / "sizes.csv"
    sizes_csv.write_text("ImageID,ImageWidth,ImageHeight\n"
                         + "".join(f"{i},{w},{h}\n" for i, (w, h) in SIZES.items()))
    assert run_cli(script.main, [*base, "--image-sizes", str(sizes_csv)]) == 0 and ok.exists()


# --------------------------------------------------------------------------- zlib bomb


def zlib_bomb(megabytes: int) -> bytes:
    """About ``megabytes`` KB of zlib data inflating to ``megabytes`` MB of '0'
    (identical deflate blocks after full flushes; the checksum is not fixed)."""
    chunk = b"0" * (1 << 20)
    c = zlib.compressobj(9)
    first = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    return first + block * (megabytes - 1) + c.flush()


def test_zlib_bomb_stops_at_the_bound(tmp_path, image_list):
    bomb = base64.b64encode(zlib_bomb(300)).decode()  # ~410 KB of text, 300 MB inflated
    assert len(bomb) < 450_000
    rows = good_rows()[:2] + [f"img3,4,7,/m/b 0.5 {bomb}"]
    sub = write(tmp_path / "s.csv", rows)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(InputError, match=r"row 4 / img3: prediction 1 \(/m/b\): "
                                             r"EncodedMask inflates to more than 33 bytes"):
            validate_submission(sub, image_list, CLASSES)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20, peak  # the file is ~0.4 MB; nothing near 300 MB
    assert time.perf_counter() - start < 5
    with pytest.raises(InputError, match="inflates to more than"):
        metric.read_submission(sub, gt_of(SIZES), CLASSES)


def test_declared_size_is_capped(tmp_path, image_list):
    rows = ["img1,100000,100000,", *good_rows()[1:]]
    validator, scorer = both_verdicts(write(tmp_path / "s.csv", rows), image_list)
    assert validator == scorer and "100000 x 100000 is more than" in validator


def test_non_utf8_image_list_is_a_clear_error(tmp_path, image_list):
    sub = write(tmp_path / "s.csv", good_rows())
    image_list.write_bytes(b"ImageID\nimg1\nimg\xe92\nimg3\n")
    with pytest.raises(InputError, match=r"list.csv: image list is not UTF-8 text: byte 0xe9 "
                                         r"at byte offset 16 \(line 3\)"):
        validate_submission(sub, image_list, CLASSES)


# --------------------------------------------------------------------------- issue 18 item 9: one verdict


AGREEMENT_CASES = {
    # (rows, sizes known to the validator, expected message part)
    "missing image": (lambda r: [r[0], r[2]], None,
                      r"s.csv: ImageID img2 (row 3 of {list}) is missing; 1 listed images are missing"),
    "extra image": (lambda r: [*r, "img4,4,4,"], None,
                    "row 5 / img4: ImageID not in the image list {list}"),
    "leading space": (lambda r: [r[0], " img2,5,3,", r[2]], None,
                      "row 3: ImageID ' img2' is not an ImageID (ASCII letters, digits"),
    "trailing space": (lambda r: [r[0], "img2 ,5,3,", r[2]], None,
                       "row 3: ImageID 'img2 ' is not an ImageID"),
    "declared size": (lambda r: [r[0], "img2,3,5,", r[2]], SIZES,
                      "row 3 / img2: declared size ImageWidth x ImageHeight = 3 x 5, but the "
                      "image is 5 x 3"),
    "extra field": (lambda r: [r[0], r[1], r[2] + ",0.5"], None,
                    "row 4 / img3: 5 fields, expected 4 (ImageID,ImageWidth,ImageHeight,"
                    "PredictionString)"),
}


@pytest.mark.parametrize("case", sorted(AGREEMENT_CASES))
def test_validator_and_scorer_reject_the_same_files(tmp_path, image_list, case):
    # before: the scorer scored files with a missing or an extra image or a
    # spaced ImageID (ignoring that row), and any declared size (resizing);
    # an extra field was reported as "EncodedMask is not valid base64"
    rows, sizes, expected = AGREEMENT_CASES[case]
    sub = write(tmp_path / "s.csv", rows(good_rows()))
    validator, scorer = both_verdicts(sub, image_list, sizes)
    assert validator == scorer, (validator, scorer)
    assert expected.format(list=image_list) in validator


def test_scorer_without_image_list_takes_the_ground_truth_images(tmp_path, image_list):
    sub = write(tmp_path / "s.csv", [good_rows()[0], good_rows()[2]])
    with pytest.raises(InputError, match=r"ImageID img2 \(in the image list of the ground truth\) "
                                         r"is missing"):
        metric.read_submission(sub, gt_of(SIZES), CLASSES)
    sub = write(tmp_path / "s.csv", [*good_rows(), "img9,4,4,"])
    with pytest.raises(InputError, match="row 5 / img9: ImageID not in the image list of the "
                                         "ground truth"):
        metric.read_submission(sub, gt_of(SIZES), CLASSES)


def test_image_list_with_a_spaced_id_is_an_error(tmp_path, image_list):
    # the list used to be stripped: ' img2' in the list matched 'img2' rows
    sub = write(tmp_path / "s.csv", good_rows())
    image_list.write_text("ImageID\nimg1\n img2\nimg3\n")
    with pytest.raises(InputError, match=r"list.csv: row 3: ImageID ' img2' is not an ImageID"):
        validate_submission(sub, image_list, CLASSES)


# --------------------------------------------------------------------------- issue 18 item 2: memory


def test_run_counter_matches_parse_runs_piece_by_piece():
    rng = np.random.default_rng(0)
    for trial in range(250):
        h, w = rng.integers(1, 40, 2)
        counts = counts_of(rng.random((h, w)) < rng.random())
        if trial % 3 == 0:
            counts = coco_string([int(x) for x in rng.integers(-3, 200, rng.integers(0, 12))])
        if trial % 7 == 0 and counts:
            counts = counts[:rng.integers(0, len(counts))]
        totals, problems = parse_runs([counts])
        for piece in (1, 3, 7, 1000):
            counter = RunCounter(1 << 40)
            for k in range(0, len(counts), piece):
                if not counter.feed(counts[k:k + piece]):
                    break
            counter.finish()
            assert (counter.problem == OK) == (problems[0] == OK), (counts, piece)
            if counter.problem == OK:
                assert counter.total == totals[0]
    # a run longer than the limit stops the count (no total can overflow)
    counter = RunCounter(10)
    assert not counter.feed(coco_string([3, 50, 2]))
    assert counter.too_long == 50


def test_inflate_chunks_never_yields_more_than_a_piece():
    data = zlib.compress(b"0" * (5 * CHUNK_CHARS + 17), 9)
    pieces = list(inflate_chunks(data, 6 * CHUNK_CHARS))
    assert max(map(len, pieces)) <= CHUNK_CHARS and sum(map(len, pieces)) == 5 * CHUNK_CHARS + 17
    with pytest.raises(ValueError, match="inflates to more than"):
        list(inflate_chunks(data, 2 * CHUNK_CHARS))


MEMORY_CHILD = r"""
import base64, resource, sys, zlib
from pathlib import Path
import numpy as np
sys.path.insert(0, sys.argv[1])
from oidseg import metric
from oidseg.submission import validate_submission
from oidseg.validity import ImageList

folder, side = Path(sys.argv[2]), 4096
pixels = side * side
z = zlib.compressobj(9)
parts, rest = [z.compress(b"111")], pixels - 3
while rest > 0:
    parts.append(z.compress(b"0" * min(rest, 1 << 20)))
    rest -= min(rest, 1 << 20)
data = b"".join(parts) + z.flush()
mask = base64.b64encode(data).decode()  # all runs 1: a 16.7M-character RLE
sub = folder / "s.csv"
sub.write_text("ImageID,ImageWidth,ImageHeight,PredictionString\n"
               f"img1,{side},{side},/m/a 0.9 {mask} /m/a 0.8 {mask}\n")
(folder / "list.csv").write_text("ImageID\nimg1\n")
square = np.zeros((side, side), np.uint8)
square[:100, :100] = 1
gt = metric.GroundTruth(
    image_ids=np.asarray(["img1"], object), heights=np.asarray([side]), widths=np.asarray([side]),
    inst_image=np.zeros(1, np.int64), inst_label=np.asarray(["/m/a"], object),
    inst_box=np.asarray([[0, 0, 100 / side, 100 / side]]), inst_group_of=np.zeros(1, bool),
    inst_rle=[metric.encode_mask(square)], label_image=np.zeros(1, np.int64),
    label_name=np.asarray(["/m/a"], object), label_confidence=np.ones(1, np.int8), expanded=True)
del square, data

def limit(extra_mb):
    vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + (extra_mb << 20), resource.RLIM_INFINITY))

limit(160)  # the row's masks take 2 x 16.7M characters inflated
assert validate_submission(sub, folder / "list.csv", {"/m/a"}).predictions == 2
limit(400)  # the scorer holds one mask's RLE (~5 bytes per character) at a time
dets = metric.read_submission(sub, gt, ["/m/a"], images=ImageList.read(folder / "list.csv"))
result = metric.evaluate(gt, dets, ["/m/a"])
assert metric.measure_rles(dets.rle)[0].tolist() == [pixels // 2] * 2
assert result.num_scored.tolist() == [2]
print("ok")
"""


def test_adversarial_masks_are_checked_in_bounded_memory(tmp_path):
    # two 4096 x 4096 masks whose runs are all 1 (about 22 KB of CSV each):
    # the code before parsed a whole row at once at ~57 bytes per RLE
    # character (1.9 GB here); now the validator stays within 160 MB and the
    # scorer within 400 MB above what the process had mapped, in a child
    # process under RLIMIT_AS (a MemoryError fails the test, never swapping)
    import subprocess
    import sys

    env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(ROOT), str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
