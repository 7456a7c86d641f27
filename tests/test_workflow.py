"""The workflow as a user drives it: dry-runs, lint, formatting, env pins.

These tests run `snakemake` in a subprocess (the Python API is gone in 8+),
each in its own working directory so that nothing leaks between them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from wf import REPO, job_counts, new_workdir, snakemake


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    return new_workdir(tmp_path)


def test_default_dry_run_shows_the_whole_dag(workdir):
    proc = snakemake("-n", "--cores", "2", cwd=workdir)
    counts = job_counts(proc.stdout)
    assert counts["make_demo"] == 1
    assert counts["extract_masks"] == 3
    assert counts["build_list"] == 3 and counts["test_shards"] == 1
    assert counts["train"] == 12  # 4 models x 3 chained stages
    # 25 test shards x (leaf, parent) + the validation split x (leaf, parent, L1, L2, L3, P1)
    assert counts["infer"] == 25 * 2 + 6
    assert counts["merge"] == 25 + 1
    assert counts["combine"] == 2
    assert counts["score"] == 9


def test_named_targets_are_partial(workdir):
    counts = job_counts(snakemake("-n", "--cores", "2", "annotations", cwd=workdir).stdout)
    assert set(counts) == {
        "make_demo",
        "extract_masks",
        "annotation_classes",
        "heldout_split",
        "train_sets",
        "val_images",
        "test_shards",
        "build_list",
        "annotations",
    }
    counts = job_counts(snakemake("-n", "--cores", "2", "train_L2", cwd=workdir).stdout)
    assert counts["train"] == 3
    counts = job_counts(snakemake("-n", "--cores", "2", "infer_parent", cwd=workdir).stdout)
    assert counts["infer"] == 25 and counts["train"] == 3  # P1 only


def test_stage_chaining_and_skip_in_the_dag(workdir):
    proc = snakemake("-n", "-p", "--cores", "2", "train_L3", cwd=workdir)
    text = proc.stdout
    # stage 2 loads stage 1's final weights; stage 1 starts from scratch
    assert re.search(r"--load-from results/models/L3/stage1\.pth", text)
    assert re.search(r"--load-from none.*--out results/models/L3/stage1\.pth", text)
    # L3 stage 2 stays on the leaf list and skips what stage 1 consumed
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    stage1 = cfg["models"]["L3"]["stages"][0]["iters"]
    per_iter = cfg["training"]["images_per_gpu"] * cfg["models"]["L3"]["gpus"]
    assert f"--skip {stage1 * per_iter}" in text


def test_released_checkpoint_removes_training(workdir, tmp_path):
    ckpt = tmp_path / "released_L1.pth"
    ckpt.write_bytes(b"weights")
    (workdir / "override.yaml").write_text(f"models:\n  L1:\n    checkpoint: {ckpt}\n")
    proc = snakemake("-n", "-p", "--cores", "2", "infer_leaf", "--configfile", "override.yaml", cwd=workdir)
    counts = job_counts(proc.stdout)
    assert counts["train"] == 6  # L2 and L3 only
    assert "results/models/L1/" not in proc.stdout
    assert str(ckpt) in proc.stdout


def test_openimages_config_dry_run_downloads(workdir):
    shutil.copytree(REPO / "configs", workdir / "configs")
    proc = snakemake("-n", "--cores", "2", "download", "--configfile", "configs/run/openimages.yaml", cwd=workdir)
    counts = job_counts(proc.stdout)
    # 9 annotation files + 3 x 16 mask archives (the Kaggle test list is manual)
    assert counts["download_file"] == 9 + 48
    # the whole DAG needs the Kaggle test list, which is placed by hand
    proc = snakemake("-n", "--cores", "2", "--configfile", "configs/run/openimages.yaml", cwd=workdir, check=False)
    assert proc.returncode != 0 and "sample_submission.csv" in proc.stdout + proc.stderr
    (workdir / "data/openimages").mkdir(parents=True)
    (workdir / "data/openimages/sample_submission.csv").write_text("ImageID,ImageWidth,ImageHeight,PredictionString\n")
    proc = snakemake("-n", "--cores", "2", "--configfile", "configs/run/openimages.yaml", cwd=workdir)
    counts = job_counts(proc.stdout)
    assert "make_demo" not in counts and counts["train"] == 12 and counts["infer"] == 56


def test_invalid_config_is_rejected(workdir):
    (workdir / "bad.yaml").write_text("inference:\n  nms_iou: 1.5\n")
    proc = snakemake("-n", "--cores", "2", "--configfile", "bad.yaml", cwd=workdir, check=False)
    assert proc.returncode != 0
    assert "nms_iou" in proc.stderr + proc.stdout


def test_lint_is_clean():
    proc = snakemake("--lint", cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snakefmt_is_clean():
    snakefmt = Path(sys.executable).with_name("snakefmt")
    proc = subprocess.run([str(snakefmt), "--check", "."], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for req in requirements:
        name = re.split(r"[<>=!~\[ ]", req, maxsplit=1)[0].lower()
        pins[name] = req[len(name) :].replace(" ", "")
    return pins


@pytest.mark.parametrize("env_file", sorted((REPO / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_conda_envs_parse_and_agree_with_pyproject(env_file):
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = _pins(project["dependencies"])
    env = yaml.safe_load(env_file.read_text())
    assert env["channels"] and env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    for name, spec in _pins(pip_section).items():
        if name in pinned:
            assert spec == pinned[name], f"{env_file.name}: {name}{spec} != pyproject {name}{pinned[name]}"


def test_every_rule_has_a_log_and_conda_env():
    for path in (REPO / "rules").glob("*.smk"):
        text = path.read_text()
        starts = [m for m in re.finditer(r"^\s*rule (\w+):", text, flags=re.M)]
        for match, nxt in zip(starts, [*starts[1:], None]):
            block = text[match.start() : nxt.start() if nxt else len(text)]
            if "shell:" in block:
                assert "log:" in block, f"{path.name}: rule {match[1]} has no log"
                assert "conda:" in block, f"{path.name}: rule {match[1]} has no conda env"


def test_annotations_target_runs_on_the_demo(workdir):
    """The `annotations` target for real, on a small demo, from a clean folder."""
    (workdir / "small.yaml").write_text(
        "demo: {n_train: 60, n_validation: 30, n_v5test: 12, n_test: 10}\n"
        "annotations: {heldout_val: {n_images: 10}}\n"
    )
    snakemake("--cores", "2", "annotations", "--configfile", "small.yaml", cwd=workdir)
    import numpy as np
    import pandas as pd

    from oidseg.errors import load_pickle

    ann = workdir / "results/annotations"
    classes = __import__("json").loads((ann / "classes.json").read_text())
    leaf = load_pickle(ann / "leaf_train.pkl")
    parent = load_pickle(ann / "parent_train.pkl")
    assert leaf["metainfo"]["classes"] == classes["leaf_classes"]
    assert parent["metainfo"]["classes"] == classes["parent_classes"]
    heldout = set(pd.read_csv(ann / "heldout_val.csv")["ImageID"])
    assert len(heldout) == 10
    train_ids = {r["img_id"] for r in leaf["data_list"]}
    assert not heldout & train_ids  # the held-out split never trains
    shards = [load_pickle(ann / f"test_shards/{i:02d}.pkl")["data_list"] for i in range(25)]
    assert sum(len(s) for s in shards) == 10
    for kind, source in [("leaf", leaf), ("leaf_oversampled", leaf), ("parent", parent)]:
        order = np.load(ann / f"lists/{kind}.npy")
        assert order.size and order.max() < len(source["data_list"])
    # a second run has nothing to do
    proc = snakemake("-n", "--cores", "2", "annotations", "--configfile", "small.yaml", cwd=workdir)
    assert "Nothing to be done" in proc.stdout + proc.stderr
