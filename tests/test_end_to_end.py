"""The whole DAG for real on the tiny run config: data -> annotations ->
12 training stages -> TTA inference -> post-processing -> submission ->
evaluation -> HTML report. Sizes are tiny; every rule runs its real code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import TINY
from wf import job_counts, snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.slow]


@pytest.fixture()
def run(tiny_run) -> Path:
    return tiny_run


def test_submission_is_complete_and_valid(run):
    submission = pd.read_csv(run / "results/submission.csv", keep_default_na=False)
    test_list = pd.read_csv(run / "data/demo/sample_submission.csv")
    assert list(submission.columns) == ["ImageID", "ImageWidth", "ImageHeight", "PredictionString"]
    assert submission["ImageID"].tolist() == test_list["ImageID"].tolist()
    assert (submission["ImageWidth"] > 0).all() and (submission["ImageHeight"] > 0).all()
    assert (run / "results/submission.ok").is_file()
    classes = json.loads((run / "results/annotations/classes.json").read_text())
    labels = {tok for s in submission["PredictionString"] for tok in s.split()[0::3]}
    assert labels and labels <= set(classes["classes"])


def test_twelve_stages_chain_and_log(run):
    import torch

    for model in ("L1", "L2", "L3", "P1"):
        previous = None
        for stage in (1, 2, 3):
            ckpt = torch.load(run / f"results/models/{model}/stage{stage}.pth", weights_only=True)
            log = [json.loads(x) for x in (run / f"results/models/{model}/stage{stage}.log.jsonl").read_text().splitlines()]
            assert log and all(np.isfinite(e["loss"]) for e in log)
            assert ckpt["meta"]["dataset_meta"]["classes"]
            if previous is not None:  # a later stage moved on from the earlier weights
                name = next(k for k in ckpt["state_dict"] if k.endswith("conv1.weight"))
                assert not torch.equal(ckpt["state_dict"][name], previous[name])
            previous = ckpt["state_dict"]


def test_inference_shards_and_evaluation(run):
    from oidseg.errors import load_pickle

    for ensemble in ("leaf", "parent"):
        shards = sorted((run / f"results/inference/{ensemble}/test").glob("*.pkl"))
        assert [p.stem for p in shards] == ["00", "01", "02"]
        images = [img for p in shards for img in load_pickle(p)["images"]]
        assert len(images) == 6
    summary = pd.read_csv(run / "results/eval/summary.csv")
    assert set(summary["entry"]) == {
        "L1", "L2", "L3", "leaf_tta", "P1", "parent_tta", "leaf_expanded", "merged", "final"
    }
    assert summary["mAP"].between(0, 1).all()
    assert (run / "results/eval/per_class_ap.png").stat().st_size > 0
    assert (run / "results/models/loss_curves.png").stat().st_size > 0


def test_rerun_has_nothing_to_do_and_report_builds(run):
    proc = snakemake("-n", "--cores", "2", "all", *TINY, cwd=run)
    assert job_counts(proc.stdout) == {}
    snakemake("--report", "report.html", *TINY, cwd=run)
    html = (run / "report.html").read_text(errors="replace")
    assert "summary.csv" in html and "loss_curves.png" in html
    # the figures of issue 14: masks drawn on images, PR curves beside the AP bars
    assert '"Predictions"' in html and "predictions_val.png" in html
    assert "predictions_test.png" in html and "pr_curves.png" in html


def test_rerunning_one_shard_touches_only_its_descendants(run):
    proc = snakemake("-n", "--cores", "2", "all", "--forcerun", "results/inference/leaf/test/01.pkl", *TINY, cwd=run)
    counts = job_counts(proc.stdout)
    assert counts.pop("infer") == 1 and "train" not in counts
    # the shard's own convert/expand/merge, then the test submission, its check
    # and the figures drawn from it
    assert counts == {
        "convert": 1, "expand_hierarchy": 1, "merge": 1, "combine": 1, "validate_submission": 1,
        "visualize": 1, "all": 1,
    }
