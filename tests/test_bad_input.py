"""Bad input: each case gives InputError naming the file and row/ID, the CLI
exits 2, and no output file is left behind."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from oidseg import raw
from oidseg.demo import FILES, DemoSizes, generate_demo
from oidseg.errors import InputError, run_cli

REPO = Path(__file__).resolve().parents[1]
SIZES = DemoSizes(n_train=10, n_validation=6, n_v5test=3, n_test=3)


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD = load_script("build_annotations")
EXTRACT = load_script("extract_masks")
PREFIX = {"train": "challenge-2019-train-masks-", "validation": "challenge-2019-validation-masks-",
          "v5test": "test-masks-"}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    generate_demo(root / "demo", seed=11, sizes=SIZES)
    for split, prefix in PREFIX.items():
        zips = sorted(str(p) for p in (root / "demo" / "masks").glob(f"{prefix}*.zip"))
        assert run_cli(EXTRACT.main, ["--zips", *zips, "--out-dir", str(root / "masks" / split),
                                      "--flag", str(root / "masks" / f"{split}.done")]) == 0
    (root / "heldout.csv").write_text("ImageID\n")
    return root


@pytest.fixture()
def work(base, tmp_path) -> Path:
    """A private copy of the demo CSVs/images and extracted masks."""
    shutil.copytree(base / "demo", tmp_path / "demo", ignore=shutil.ignore_patterns("*.zip"))
    shutil.copytree(base / "masks", tmp_path / "masks")
    shutil.copy(base / "heldout.csv", tmp_path / "heldout.csv")
    return tmp_path


def hier(work: Path) -> list[str]:
    d = work / "demo"
    return ["--hierarchy", str(d / FILES["hierarchy"]), "--classes", str(d / FILES["classes"])]


def train_argv(work: Path) -> list[str]:
    d, argv = work / "demo", ["train", *hier(work)]
    for key, split, csv in (("train", "train", "train_masks"), ("val", "validation", "val_masks"),
                            ("v5test", "v5test", "v5test_masks")):
        argv += [f"--{key}-masks", str(d / FILES[csv]), f"--{key}-images", str(d / "images" / split),
                 f"--{key}-mask-dir", str(work / "masks" / split)]
    return argv + ["--heldout", str(work / "heldout.csv"), "--leaf-out", str(work / "out" / "leaf.pkl"),
                   "--parent-out", str(work / "out" / "parent.pkl")]


def heldout_argv(work: Path) -> list[str]:
    return ["heldout", *hier(work), "--val-masks", str(work / "demo" / FILES["val_masks"]),
            "--size", "2", "--out", str(work / "out" / "heldout.csv")]


def images_argv(work: Path, listing: Path) -> list[str]:
    return ["images", *hier(work), "--list", str(listing), "--image-dir",
            str(work / "demo" / "images" / "test"), "--source", "test",
            "--out", *(str(work / "out" / f"{k:02d}.pkl") for k in range(25))]


def fails(main, argv, capsys, *expected: str) -> str:
    assert run_cli(main, argv) == 2
    err = capsys.readouterr().err
    err = err[err.index("error: "):]
    for text in expected:
        assert text in err, (text, err)
    return err


def no_outputs(work: Path) -> None:
    out = work / "out"
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())


def edit_csv(path: Path, fn) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame = fn(frame)
    frame.to_csv(path, index=False)
    return frame


# --------------------------------------------------------------------------- CSV content


def test_valid_base_builds(work, capsys):
    assert run_cli(BUILD.main, train_argv(work)) == 0
    assert (work / "out" / "leaf.pkl").is_file() and (work / "out" / "parent.pkl").is_file()


def test_missing_column(work, capsys):
    path = work / "demo" / FILES["val_masks"]
    edit_csv(path, lambda f: f.drop(columns=["BoxYMax"]))
    fails(BUILD.main, heldout_argv(work), capsys, str(path), "'BoxYMax'", "missing")
    no_outputs(work)


def test_renamed_column(work, capsys):
    path = work / "demo" / FILES["train_masks"]
    edit_csv(path, lambda f: f.rename(columns={"LabelName": "Label"}))
    fails(BUILD.main, train_argv(work), capsys, str(path), "'LabelName'")
    no_outputs(work)


def test_unknown_mid(work, capsys):
    path = work / "demo" / FILES["train_masks"]

    def bad(f):
        f.loc[2, "LabelName"] = "/m/0zzzzz"
        return f
    frame = edit_csv(path, bad)
    fails(BUILD.main, train_argv(work), capsys, str(path), "row 3", frame.loc[2, "ImageID"],
          "/m/0zzzzz")
    no_outputs(work)


def test_box_outside_unit_range(work, capsys):
    path = work / "demo" / FILES["val_masks"]

    def bad(f):
        f.loc[1, "BoxXMax"] = "1.5"
        return f
    frame = edit_csv(path, bad)
    fails(BUILD.main, heldout_argv(work), capsys, str(path), "row 2", frame.loc[1, "ImageID"],
          "outside [0, 1]")
    no_outputs(work)


def test_box_min_greater_than_max(work, capsys):
    path = work / "demo" / FILES["v5test_masks"]

    def bad(f):
        f.loc[3, ["BoxYMin", "BoxYMax"]] = ["0.9", "0.1"]
        return f
    frame = edit_csv(path, bad)
    fails(BUILD.main, train_argv(work), capsys, str(path), "row 4", frame.loc[3, "ImageID"],
          "BoxYMin=0.9 > BoxYMax=0.1")
    no_outputs(work)


def test_non_numeric_box(work, capsys):
    path = work / "demo" / FILES["val_masks"]

    def bad(f):
        f.loc[0, "BoxXMin"] = "abc"
        return f
    frame = edit_csv(path, bad)
    fails(BUILD.main, heldout_argv(work), capsys, str(path), "row 1", frame.loc[0, "ImageID"],
          "BoxXMin")
    no_outputs(work)


def test_empty_file(work, capsys):
    path = work / "demo" / FILES["val_masks"]
    path.write_bytes(b"")
    fails(BUILD.main, heldout_argv(work), capsys, str(path), "empty")
    no_outputs(work)


def test_header_only_test_list_is_rejected_in_annotation_stage(work, capsys):
    # before: 25 empty shards were written and only combine failed, much later
    listing = work / "list.csv"
    listing.write_text("ImageID,ImageWidth,ImageHeight,PredictionString\n")
    fails(BUILD.main, images_argv(work, listing), capsys, str(listing), "header but no rows")
    no_outputs(work)


def test_duplicate_image_in_test_list(work, capsys):
    path = work / "demo" / FILES["test_list"]
    frame = edit_csv(path, lambda f: pd.concat([f, f.iloc[[1]]], ignore_index=True))
    dup = frame.loc[1, "ImageID"]
    fails(BUILD.main, images_argv(work, path), capsys, str(path), f"row {len(frame)}", dup,
          "duplicate")
    no_outputs(work)


# --------------------------------------------------------------------------- files


def test_missing_mask_png(work, capsys):
    masks = pd.read_csv(work / "demo" / FILES["train_masks"], dtype=str)
    victim = masks["MaskPath"].iloc[4]
    (work / "masks" / "train" / victim).unlink()
    fails(BUILD.main, train_argv(work), capsys, victim, "missing", masks["ImageID"].iloc[4],
          str(work / "demo" / FILES["train_masks"]))
    no_outputs(work)


def test_unreadable_png(work, capsys):
    masks = pd.read_csv(work / "demo" / FILES["val_masks"], dtype=str)
    victim = work / "masks" / "validation" / masks["MaskPath"].iloc[2]
    victim.write_bytes(b"this is not a png at all, just text")
    fails(BUILD.main, train_argv(work), capsys, str(victim), "not a PNG",
          masks["ImageID"].iloc[2])
    no_outputs(work)


def test_unreadable_image(work, capsys):
    masks = pd.read_csv(work / "demo" / FILES["train_masks"], dtype=str)
    image_id = masks["ImageID"].iloc[-1]
    jpg = work / "demo" / "images" / "train" / f"{image_id}.jpg"
    jpg.write_bytes(b"\x00garbage")
    fails(BUILD.main, train_argv(work), capsys, str(jpg), image_id, "unreadable")
    no_outputs(work)


def test_missing_test_image(work, capsys):
    path = work / "demo" / FILES["test_list"]
    image_id = pd.read_csv(path, dtype=str)["ImageID"].iloc[0]
    (work / "demo" / "images" / "test" / f"{image_id}.jpg").unlink()
    fails(BUILD.main, images_argv(work, path), capsys, f"{image_id}.jpg", "missing")
    no_outputs(work)


def test_corrupt_zip(base, tmp_path, capsys):
    good = base / "demo" / "masks" / f"{PREFIX['train']}0.zip"
    bad = tmp_path / f"{PREFIX['train']}1.zip"
    data = (base / "demo" / "masks" / f"{PREFIX['train']}1.zip").read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    flag = tmp_path / "out" / "train.done"
    fails(EXTRACT.main, ["--zips", str(good), str(bad), "--out-dir", str(tmp_path / "x"),
                         "--flag", str(flag)], capsys, str(bad), "corrupt zip")
    assert not flag.exists()


def test_reextraction_drops_pngs_removed_from_the_zip(base, tmp_path, capsys):
    import zipfile

    src = base / "demo" / "masks" / f"{PREFIX['train']}0.zip"
    with zipfile.ZipFile(src) as zf:
        members = [(i.filename, zf.read(i)) for i in zf.infolist() if not i.is_dir()]
    assert len(members) >= 2
    zip_path = tmp_path / src.name
    out_dir, flag = tmp_path / "masks", tmp_path / "train.done"
    argv = ["--zips", str(zip_path), "--out-dir", str(out_dir), "--flag", str(flag)]
    for kept in (members, members[1:]):  # the second zip lacks the first PNG
        with zipfile.ZipFile(zip_path, "w") as zf:
            for name, data in kept:
                zf.writestr(name, data)
        assert run_cli(EXTRACT.main, argv) == 0
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == sorted(Path(n).name for n, _ in members[1:])
    assert flag.read_text().split("\t")[1].strip() == str(len(members) - 1)
    # a folder holding something else is not wiped
    (out_dir / "notes.txt").write_text("mine")
    fails(EXTRACT.main, argv, capsys, str(out_dir), "notes.txt")
    assert (out_dir / "notes.txt").exists() and not flag.exists()


def test_non_png_member_in_zip(tmp_path, capsys):
    import zipfile

    bad = tmp_path / "test-masks-0.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("0000000000000000_m0abc_1.png", b"not a png")
    flag = tmp_path / "out" / "v5test.done"
    fails(EXTRACT.main, ["--zips", str(bad), "--out-dir", str(tmp_path / "x"), "--flag",
                         str(flag)], capsys, str(bad), "0000000000000000_m0abc_1.png")
    assert not flag.exists()


def test_two_members_with_one_name_are_an_error(base, tmp_path, capsys):
    """The later member would silently replace the real mask (issue 18, item 7):
    in one zip, or in two zips of one split."""
    import warnings
    import zipfile

    src = base / "demo" / "masks" / f"{PREFIX['train']}0.zip"
    with zipfile.ZipFile(src) as zf:
        name, data = next((i.filename, zf.read(i)) for i in zf.infolist() if not i.is_dir())
    one = tmp_path / f"{PREFIX['train']}0.zip"
    with warnings.catch_warnings(), zipfile.ZipFile(one, "w") as zf:
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate name
        zf.writestr(name, data)
        zf.writestr(name, data[:-3] + b"xyz")
    flag = tmp_path / "out" / "train.done"
    argv = ["--out-dir", str(tmp_path / "x"), "--flag", str(flag)]
    fails(EXTRACT.main, ["--zips", str(one), *argv], capsys, str(one), f"a second mask named {name}")
    assert not flag.exists()
    other = tmp_path / f"{PREFIX['train']}1.zip"
    for path in (one, other):
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(f"sub/{name}" if path == other else name, data)
    fails(EXTRACT.main, ["--zips", str(one), str(other), *argv], capsys, f"{other}: member sub/{name}",
          f"(the first: {one}: {name})")
    assert not flag.exists()


# --------------------------------------------------------------------------- readers, CLI


def test_bbox_and_label_flags(work):
    path = work / "demo" / FILES["train_bbox"]
    frame = edit_csv(path, lambda f: f.assign(IsGroupOf=["0"] * (len(f) - 1) + ["2"]))
    with pytest.raises(InputError, match=rf"row {len(frame)} / {frame['ImageID'].iloc[-1]}"):
        raw.read_bbox_csv(path)
    path = work / "demo" / FILES["val_labels"]
    frame = edit_csv(path, lambda f: f.assign(Confidence=["5"] + ["1"] * (len(f) - 1)))
    with pytest.raises(InputError, match=rf"{path}: row 1 / {frame['ImageID'].iloc[0]}"):
        raw.read_labels_csv(path)


def test_real_cli_exit_status(work):
    path = work / "demo" / FILES["val_masks"]
    edit_csv(path, lambda f: f.drop(columns=["ImageID"]))
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "build_annotations.py"),
                           *heldout_argv(work)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert str(path) in proc.stderr and "'ImageID'" in proc.stderr
    no_outputs(work)


# --------------------------------------------------------------------------- stale temporary files


def test_stale_tmp_files_of_killed_jobs_are_removed(tmp_path):
    import os
    import time

    from oidseg.errors import atomic_write_text

    out = tmp_path / "shard.csv"
    stale = tmp_path / ".shard.csv.k3j_x9a2.tmp"  # what mkstemp made for a killed job
    fresh = tmp_path / ".shard.csv.abcdefgh.tmp"  # a writer that started after us
    other = tmp_path / ".shard.csv.gz.k3j_x9a2.tmp"  # the tmp file of another output
    foreign = tmp_path / ".shard.csv.notes.tmp"  # not an mkstemp name
    for path in (stale, fresh, other, foreign):
        path.write_bytes(b"x" * 1000)
    old = time.time() - 3600
    for path in (stale, other, foreign):
        os.utime(path, (old, old))
    atomic_write_text(out, "done\n")
    assert out.read_text() == "done\n"
    assert not stale.exists()
    assert fresh.exists() and other.exists() and foreign.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == sorted(
        p.name for p in (fresh, other, foreign))
