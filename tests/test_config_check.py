"""The configuration is checked before any job (issue 18, items 1, 4, 5, 12):
unknown keys named with the closest known key, ranges, ensemble members,
list kinds, files that must exist; and a finished run stays finished when it
is moved (params hold no absolute checkout path)."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import pytest
import yaml

from oidseg.config_check import semantic_problems, unknown_keys
from wf import REPO, job_counts, new_workdir, snakemake

SCHEMA = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())


def with_defaults(config: dict) -> dict:
    """The config as rules/common.smk sees it after validate() (defaults filled)."""
    config = copy.deepcopy(config)
    config["annotations"].setdefault("n_shards", 25)
    config["inference"].setdefault("max_per_img_overrides", {})
    return config


def test_the_shipped_configs_have_no_problems():
    assert unknown_keys(CONFIG, SCHEMA) == []
    assert semantic_problems(with_defaults(CONFIG), str(REPO), str(REPO)) == []
    for name in ("openimages.yaml", "tiny.yaml", "released.yaml"):
        assert unknown_keys(yaml.safe_load((REPO / "configs/run" / name).read_text()), SCHEMA) == [], name


@pytest.mark.parametrize("patch, expected", [
    ({"inference": {"max_per_imgs": 3}}, "inference.max_per_imgs: unknown key; did you mean 'max_per_img'?"),
    ({"infernce": {}}, "infernce: unknown key; did you mean 'inference'?"),
    ({"models": {"L1": {"stages": [{"lr_factor": 1, "list": "leaf", "iter": 2, "aug": "single"}]}}},
     "models.L1.stages[0].iter: unknown key; did you mean 'iters'?"),
    ({"rebalance": {"leaf": {"middle_targets": 3}}},
     "rebalance.leaf.middle_targets: unknown key; did you mean 'middle_target'?"),
    ({"inference": {"max_per_img_overrides": {3: 200}}},
     "inference.max_per_img_overrides.3: key 3 is not a string (quote it)"),
    ({"inference": {"max_per_img_overrides": {"3": 200}}}, "inference.max_per_img_overrides.3: unknown key"),
])
def test_unknown_keys_are_named_with_the_closest_known_key(patch, expected):
    problems = unknown_keys(patch, SCHEMA)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def semantic(patch: dict, workdir: Path) -> list[str]:
    config = with_defaults(CONFIG)
    for section, values in patch.items():
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(config[section].get(key), dict):
                config[section][key].update(value)
            else:
                config[section][key] = value
    return semantic_problems(config, str(REPO), str(workdir))


def test_settings_that_contradict_each_other_or_name_missing_files(tmp_path):
    (tmp_path / "real.pth").write_bytes(b"x")
    cases = [
        ({"inference": {"ensembles": {"leaf": ["L1", "L9"], "parent": ["P1"]}}},
         "inference.ensembles.leaf: 'L9' is not a model (models: L1, L2, L3, P1)"),
        ({"inference": {"ensembles": {"leaf": ["L1", "P1"], "parent": ["P1"]}}},
         "inference.ensembles.leaf: P1 is a parent model; the leaf ensemble needs leaf models"),
        ({"models": {"P1": {"stages": [{"lr_factor": 1, "list": "leaf", "iters": 2, "aug": "single"}]}}},
         "models.P1.stages[0].list: 'leaf' is a list of leaf images; a parent model trains on 'parent'"),
        ({"models": {"L2": {"stages": [{"lr_factor": 1, "list": "parent", "iters": 2, "aug": "single"}]}}},
         "models.L2.stages[0].list: 'parent' is a list of parent images; a leaf model trains on 'leaf' or "
         "'leaf_oversampled'"),
        ({"models": {"L1": {"checkpoint": "gone.pth"}}}, "models.L1.checkpoint: gone.pth does not exist"),
        ({"models": {"L3": {"released": "gone.pth"}}}, "models.L3.released: gone.pth does not exist"),
        ({"models": {"L1": {"pretrained": "."}}}, "models.L1.pretrained: . is a directory, not a file"),
        ({"models": {"L1": {"checkpoint": "real.pth", "released": "real.pth"}}},
         "models.L1: set either 'checkpoint' (our own weights) or 'released'"),
        ({"models": {"L1": {"config": "configs/demo/L9.py"}}}, "models.L1.config: configs/demo/L9.py does not exist"),
        ({"inference": {"max_per_img_overrides": {"25": 200}}},
         "inference.max_per_img_overrides: shard '25' does not exist (annotations.n_shards is 25: 00..24)"),
    ]
    for patch, expected in cases:
        problems = semantic(copy.deepcopy(patch), tmp_path)
        assert len(problems) == 1 and problems[0].startswith(expected), (patch, problems)
    # a model-zoo name is not a file; an existing file is fine
    assert semantic({"models": {"L1": {"pretrained": "open-mmlab://resnext101_64x4d",
                                        "checkpoint": "real.pth"}}}, tmp_path) == []


@pytest.mark.workflow
@pytest.mark.parametrize("extra, expected", [
    ("inference: {ensembles: {leaf: [L1, L9], parent: [P1]}}", "inference.ensembles.leaf: 'L9' is not a model"),
    ("inference: {max_per_imgs: 3}", "inference.max_per_imgs: unknown key; did you mean 'max_per_img'?"),
    ("inference: {score_thr: 2}", "2 is greater than the maximum of 1"),
    ("models: {P1: {stages: [{lr_factor: 1.0, list: leaf, iters: 2, aug: single}]}}",
     "models.P1.stages[0].list: 'leaf' is a list of leaf images"),
])
def test_a_bad_setting_stops_the_dry_run_before_any_job(tmp_path, extra, expected):
    workdir = new_workdir(tmp_path)
    (workdir / "extra.yaml").write_text(extra + "\n")
    proc = snakemake("-n", "--configfile", "extra.yaml", cwd=workdir, check=False, timeout=300)
    assert proc.returncode != 0
    assert expected in proc.stderr + proc.stdout
    assert "Job stats" not in proc.stdout


# ----------------------------------------------------- on a finished run --
@pytest.mark.workflow
@pytest.mark.slow
@pytest.mark.parametrize("extra, expected", [
    ("models: {L2: {checkpoint: results/models/L2/missing.pth}}",
     "models.L2.checkpoint: results/models/L2/missing.pth does not exist"),
    ("models: {L3: {released: nowhere/L3.pth}}", "models.L3.released: nowhere/L3.pth does not exist"),
    ("inference: {ensembles: {leaf: [L1, L9], parent: [P1]}}", "inference.ensembles.leaf: 'L9' is not a model"),
])
def test_once_results_exist_a_missing_file_or_model_still_stops_the_run(tiny_run, extra, expected):
    """With results/submission.csv present, Snakemake alone would plan
    nothing and exit 0, and the old weights' submission would stand."""
    (tiny_run / "extra.yaml").write_text(extra + "\n")
    proc = snakemake("-n", "all", "--configfile", "tiny.yaml", "extra.yaml", cwd=tiny_run, check=False,
                     timeout=300)
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert expected in proc.stderr + proc.stdout


@pytest.mark.workflow
@pytest.mark.slow
def test_an_edited_model_config_reruns_what_builds_the_model(tiny_run):
    """The model configs and their _base_ files are inputs of the jobs that
    build the models (train, infer): an edit reruns them."""
    assert job_counts(snakemake("-n", "all", "--configfile", "tiny.yaml", cwd=tiny_run).stdout) == {}
    base = REPO / "configs" / "demo" / "_base_" / "demo_sizes.py"  # inherited by every demo model
    text, stat = base.read_bytes(), base.stat()
    try:  # an edit (a newer file with the same content is not one: Snakemake compares checksums)
        base.write_bytes(text + b"# an edit\n")
        counts = job_counts(snakemake("-n", "all", "--configfile", "tiny.yaml", cwd=tiny_run).stdout)
    finally:
        base.write_bytes(text)
        os.utime(base, (stat.st_atime, stat.st_mtime))
    assert counts.get("train") == 12 and counts.get("infer") == 12, counts


@pytest.fixture(scope="module")
def moved_run(tiny_run, tmp_path_factory) -> Path:
    """A copy of the finished tiny run (results, work, .snakemake, data,
    logs) in another folder, modification times kept."""
    moved = tmp_path_factory.mktemp("moved_run")
    shutil.rmtree(moved)
    shutil.copytree(tiny_run, moved, symlinks=True)
    return moved


#: what a checkout copy leaves out: git, the environment, runs, caches, pictures
CHECKOUT_IGNORE = shutil.ignore_patterns(".git", ".venv", ".snakemake", ".pytest_cache", "__pycache__",
                                         "*.egg-info", "results", "work", "logs", "data", "docs")


def move_with_checkout(run: Path, base: Path) -> tuple[Path, Path]:
    """Copies of ``run`` and of this checkout under ``base``, in the same
    position relative to each other (as a renamed mount point or a restored
    backup of both leaves them): every absolute path differs, every path from
    the run to the checkout is the same. Returns (run copy, checkout copy)."""
    rel = Path(os.path.relpath(REPO, run))
    ups = rel.parts.count("..")
    moved = base.joinpath(*(f"up{i}" for i in range(max(ups - 1, 0))), "run")
    checkout = Path(os.path.normpath(moved / rel))
    assert checkout.is_relative_to(base) and not checkout.is_relative_to(moved), (moved, checkout)
    shutil.copytree(REPO, checkout, ignore=CHECKOUT_IGNORE)
    shutil.copytree(run, moved, symlinks=True)
    return moved, checkout


def assert_nothing_to_do(proc) -> None:
    assert job_counts(proc.stdout) == {}, proc.stdout[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.workflow
@pytest.mark.slow
def test_a_moved_run_is_still_complete(moved_run):
    """Nothing to do in a copy of the working directory beside the original."""
    assert_nothing_to_do(snakemake("-n", "all", "--configfile", "tiny.yaml", cwd=moved_run))


@pytest.mark.workflow
@pytest.mark.slow
def test_a_run_moved_with_its_checkout_is_still_complete(tiny_run, tmp_path):
    """The issue's case (a project folder renamed, or restored elsewhere): the
    run and the checkout both move, so every absolute path changes. The params
    hold none of them, so the copy plans nothing (before: all jobs, "params
    have changed" from make_demo on)."""
    moved, checkout = move_with_checkout(tiny_run, tmp_path / "elsewhere")
    assert_nothing_to_do(snakemake("-n", "all", "--configfile", "tiny.yaml", cwd=moved, checkout=checkout))


@pytest.mark.workflow
@pytest.mark.slow
def test_a_refused_start_keeps_the_finished_stage_log(moved_run):
    """A rerun that finds the stage's work dir locked (its trainer still
    running, or an orphan of it) fails naming the holder; Snakemake deletes
    the job's log before it runs, but the work dir's log of every attempt
    keeps the finished run's, and the refusal says where it is."""
    from oidseg.stage_dir import lock_work_dir, unlock_work_dir

    work_dir = moved_run / "work" / "L1" / "stage3"
    work_log = work_dir / "train.log"
    before = work_log.read_text()
    assert before.startswith("=== ") and "train: wrote results/models/L1/stage3.pth" in before
    lock_work_dir(work_dir)
    try:
        proc = snakemake("--cores", "1", "-f", "results/models/L1/stage3.pth", "--configfile", "tiny.yaml",
                         cwd=moved_run, check=False, timeout=600)
    finally:
        unlock_work_dir(work_dir)
    assert proc.returncode != 0
    assert work_log.read_text() == before
    job_log = (moved_run / "logs" / "train" / "L1_stage3.log").read_text()
    assert "another training job" in job_log and "holds this work dir" in job_log
    assert f"(its log: work/L1/stage3/{work_log.name})" in job_log
