"""A training stage never ends with exit 0 and wrong weights (issue 18,
items 3, 4, 6, 8): a diverged loss stops it with an error naming the
iteration and leaves only finite periodic checkpoints; weights that hold
NaN are refused wherever they are read; a list built from another pickle is
refused; a full disk is a one-line error naming what was not written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from oidseg.checkpoints import load_checkpoint, nonfinite_tensors, state_dict_of
from oidseg.errors import InputError
from oidseg.mmdet_ext.dataset import make_synthetic_dataset
from oidseg.rebalance import check_list_source, list_source
from test_train_inputs import CONFIG, ROOT, SCRIPT, data  # noqa: F401  (data: a fixture)


def train(data, out, iters, *extra):
    cmd = [sys.executable, str(SCRIPT), "--config", str(CONFIG), "--ann", str(data / "ann.pkl"),
           "--order", str(data / "order.npy"), "--iters", str(iters), "--work-dir", str(out / "work"),
           "--out", str(out / "final.pth"), "--log-jsonl", str(out / "log.jsonl"), "--threads", "1", *extra]
    return subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=600)


def strict_json(line: str):
    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(line, parse_constant=refuse)


@pytest.mark.slow
def test_a_diverged_stage_fails_and_keeps_only_finite_checkpoints(data, tmp_path):
    proc = train(data, tmp_path, 8, "--lr-factor", "100000", "--nonfinite-patience", "2",
                 "--checkpoint-interval", "1", "--log-interval", "1")
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("error: iteration ") and "diverged" in error, error
    assert not (tmp_path / "final.pth").exists()
    assert not (tmp_path / "log.jsonl").exists()
    checkpoints = sorted((tmp_path / "work").glob("iter_*.pth"))
    assert checkpoints, "the finite checkpoints of the first iterations stay"
    for path in checkpoints:
        assert nonfinite_tensors(torch.load(path, weights_only=True)["state_dict"]) == [], path
    lines = (tmp_path / "work" / "train_log.jsonl").read_text().splitlines()
    entries = [strict_json(line) for line in lines]  # no bare NaN tokens
    assert any("loss" in e.get("nonfinite", []) and e["loss"] is None for e in entries), entries[-1]


def test_weights_with_nan_are_refused_where_they_are_read(tmp_path):
    path = tmp_path / "nan.pth"
    torch.save({"state_dict": {"a": torch.ones(3), "b": torch.tensor([1.0, float("nan")]),
                               "n": torch.tensor(3)}}, path)
    with pytest.raises(InputError, match=r"nan.pth: checkpoint holds non-finite weights \(NaN/inf\) in 1 of 3 "
                                         r"tensors \(b\): the training that wrote it diverged"):
        state_dict_of(load_checkpoint(path), path)


@pytest.mark.parametrize("content, expected", [
    (None, "is a directory, not a file"),
    (os.urandom(4096), "is not a PyTorch checkpoint"),
])
def test_checkpoint_messages_say_what_the_file_is(tmp_path, content, expected):
    path = tmp_path / "ckpt.pth"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(b"\x13" + content)
    with pytest.raises(InputError, match=f"ckpt.pth: checkpoint {expected}"):
        load_checkpoint(path)


def test_a_code_carrying_checkpoint_names_the_global_it_would_call(tmp_path):
    from test_checkpoints import write_payload

    path = write_payload(tmp_path / "evil.pth", tmp_path / "ran")
    with pytest.raises(InputError) as err:
        load_checkpoint(path)
    assert "loading it would call posix.system" in str(err.value)
    assert "weights_only" not in str(err.value)  # not torch's advice to turn the protection off
    assert not (tmp_path / "ran").exists()


def test_a_list_built_from_another_pickle_is_refused(data, tmp_path):
    other = tmp_path / "other"
    make_synthetic_dataset(str(other), n_images=6, n_classes=3, seed=1)
    order = np.load(data / "order.npy")
    source = tmp_path / "order.source.json"
    source.write_text(json.dumps(list_source("leaf", order, data / "ann.pkl", 4)))
    check_list_source(source, data / "order.npy", data / "ann.pkl")  # the pickle it was built from
    proc = train(data, tmp_path, 2, "--ann", str(other / "ann.pkl"), "--list-source", str(source))
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert f"this leaf list was built from {data / 'ann.pkl'} (4 images" in error
    assert f"not from {other / 'ann.pkl'}" in error
    assert not (tmp_path / "work").exists()


def test_the_workflow_writes_and_checks_list_sources(tiny_run):
    from oidseg.stage_dir import file_sha256

    for kind, pickle in (("leaf", "leaf_train.pkl"), ("leaf_oversampled", "leaf_train.pkl"),
                         ("parent", "parent_train.pkl")):
        source = json.loads((tiny_run / f"results/annotations/lists/{kind}.source.json").read_text())
        assert source["kind"] == kind
        assert source["ann_sha256"] == file_sha256(tiny_run / "results/annotations" / pickle)
        assert source["entries"] == np.load(tiny_run / f"results/annotations/lists/{kind}.npy").size
    log = (tiny_run / "logs/train/P1_stage1.log").read_text()
    work_log = (tiny_run / "work/P1/stage1/train.log").read_text()
    banner = next(line for line in log.splitlines() if line.startswith("=== "))
    assert work_log.startswith(banner)
    assert "train: wrote results/models/P1/stage1.pth" in work_log


@pytest.mark.slow
def test_a_full_disk_stops_training_with_a_clear_error(data, tmp_path):
    from test_full_disk import run_on_full_disk

    out = tmp_path / "full"
    cmd = [sys.executable, str(SCRIPT), "--config", str(CONFIG), "--ann", str(data / "ann.pkl"),
           "--order", str(data / "order.npy"), "--iters", "2", "--work-dir", str(out / "work"),
           "--out", str(out / "final.pth"), "--log-jsonl", str(out / "log.jsonl"), "--threads", "1"]
    proc = run_on_full_disk(cmd, out)
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: {out}") and "could not be written" in error, error
    assert "Traceback" not in proc.stderr
    assert not (out / "final.pth").exists()
