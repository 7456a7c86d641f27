"""Changed settings rerun exactly their jobs; config values never reach the
shell unquoted; every rule execs its command (issue 13, items 2, 4, 8).

Snakemake records a rule's params in its metadata only when they are plain
values or functions of the wildcards (params derived from input/output are
not recorded), so the train and infer rules build their arguments from the
wildcards and the config alone.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from conftest import TINY
from wf import REPO, job_counts, new_workdir, snakemake

TINY_CFG = yaml.safe_load((REPO / "configs/run/tiny.yaml").read_text())


def planned(run: Path, override: dict, name: str) -> dict[str, int]:
    """Jobs that `snakemake -n all` plans on the finished tiny run after
    merging ``override`` over the tiny config."""
    (run / name).write_text(yaml.safe_dump(override))
    proc = snakemake("-n", "--cores", "2", "all", "--configfile", "tiny.yaml", name, cwd=run)
    return job_counts(proc.stdout)


def _n_test_shards() -> int:
    return TINY_CFG["annotations"]["n_shards"]


@pytest.mark.workflow
@pytest.mark.slow
def test_changed_settings_plan_exactly_the_affected_jobs(tiny_run):
    shards = _n_test_shards()
    # every inference job (3 + 3 test shards, 6 validation runs) uses max_per_img
    counts = planned(tiny_run, {"inference": {"max_per_img": 7}}, "max_per_img.yaml")
    assert counts.get("infer") == 2 * shards + 6 and "train" not in counts
    assert "build_list" not in counts and "train_sets" not in counts

    # the TTA scales: the two ensembles only, not the single-model validation runs
    counts = planned(tiny_run, {"inference": {"scales": [[200, 120]]}}, "scales.yaml")
    assert counts.get("infer") == 2 * shards + 2 and "train" not in counts

    # one stage's LR: that stage, the later stages of the same model, and the
    # inference jobs that use the model (leaf ensemble on every shard, L2 alone)
    stages = [dict(s) for s in TINY_CFG["models"]["L2"]["stages"]]
    stages[1]["lr_factor"] = 0.25
    counts = planned(tiny_run, {"models": {"L2": {"stages": stages}}}, "lr.yaml")
    assert counts.get("train") == 2
    assert counts.get("infer") == shards + 1 + 1

    # the training seed: every stage of every model, every inference job
    counts = planned(tiny_run, {"training": {"seed": 1}}, "seed.yaml")
    assert counts.get("train") == 12 and counts.get("infer") == 2 * shards + 6
    assert "build_list" not in counts

    # and nothing when the setting is back to what ran
    proc = snakemake("-n", "--cores", "2", "all", *TINY, cwd=tiny_run)
    assert job_counts(proc.stdout) == {}


@pytest.mark.workflow
def test_config_values_and_paths_are_quoted(tmp_path):
    """A drop-list entry with shell syntax is a literal ID, and a data folder
    with a space in its name works (both broke the jobs before)."""
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    new_workdir(workdir, "tiny.yaml")
    data = "data dir/demo"
    (workdir / "hostile.yaml").write_text(yaml.safe_dump({
        "raw": {"dir": data, "images": f"{data}/images", "masks": f"{data}/masks"},
        "annotations": {"drop_images": ["$(touch PWNED_A)", "x; touch PWNED_B", "`touch PWNED_C`"]},
    }))
    snakemake("--cores", "2", "results/annotations/heldout_val.csv",
              "--configfile", "tiny.yaml", "hostile.yaml", cwd=workdir, timeout=900)
    assert (workdir / "results/annotations/heldout_val.csv").stat().st_size > 0
    assert (workdir / data / "demo_manifest.json").is_file()
    planted = [p.name for p in workdir.rglob("PWNED*")]
    assert planted == [], f"a config value ran as a command: {planted}"


@pytest.mark.workflow
def test_every_rule_execs_its_command(tmp_path):
    """`exec` replaces the job's shell, so a kill of the job reaches the
    program itself (no orphaned trainer behind a dead shell)."""
    workdir = new_workdir(tmp_path)
    proc = snakemake("-n", "-p", "--cores", "2", "all", cwd=workdir)
    # target rules (`all`, `annotations`, ...) have no command: "None"
    commands = [c for c in re.findall(r"^Shell command: (.*)$", proc.stdout, flags=re.M) if c != "None"]
    assert len(commands) > 100
    assert all(c.startswith("exec ") for c in commands), [c for c in commands if not c.startswith("exec ")][:3]

