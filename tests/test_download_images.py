"""The image download (issue 20) against a real S3 server on 127.0.0.1.

moto's standalone server (tests/s3_server.py) holds the demo images under the
dataset's key layout (train/, validation/, test/ for V5 test, challenge2018/
for the Kaggle test images); a fault proxy in front of it counts the GETs and
injects 503s, short bodies and wrong lengths. Nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from oidseg.demo import DemoSizes, generate_demo
from oidseg.errors import run_cli
from oidseg.image_download import JpegError, jpeg_size, read_manifests, read_skipped
from s3_server import FaultProxy, admin_client, moto_server, public_bucket, upload_folder
from wf import REPO, env_with_venv, job_counts, new_workdir, snakemake

BUCKET = "open-images-dataset"
PREFIXES = {"train": "train", "validation": "validation", "v5test": "test", "test": "challenge2018"}
ID_LISTS = {
    "train": "challenge-2019-train-segmentation-masks.csv",
    "validation": "challenge-2019-validation-segmentation-masks.csv",
    "v5test": "test-annotations-object-segmentation.csv",
    "test": "sample_submission.csv",
}
HEX = "0123456789abcdef"


def _load_script():
    spec = importlib.util.spec_from_file_location("_script_download_images",
                                                  REPO / "scripts" / "download_images.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT = _load_script()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "demo"
    generate_demo(root, seed=3, sizes=DemoSizes(n_train=40, n_validation=24, n_v5test=12,
                                                n_test=10, min_side=64, max_side=128))
    return root


@pytest.fixture(scope="module")
def s3(demo) -> str:
    """A moto S3 server with the demo images under the official key layout."""
    with moto_server() as endpoint:
        client = admin_client(endpoint)
        public_bucket(client, BUCKET)
        for split, prefix in PREFIXES.items():
            upload_folder(client, BUCKET, prefix, demo / "images" / split)
        yield endpoint


@pytest.fixture()
def proxy(s3):
    with FaultProxy(s3) as p:
        yield p


def job_args(demo: Path, out: Path, split: str, shard: str, endpoint: str, *extra: str,
             ids: Path | None = None, prefix: str | None = None) -> list[str]:
    return [
        "--ids", str(ids or demo / ID_LISTS[split]), "--split", split, "--shard", shard,
        "--image-dir", str(out / split), "--endpoint-url", endpoint, "--bucket", BUCKET,
        "--key-template", f"{prefix or PREFIXES[split]}/{{image_id}}.jpg",
        "--threads", "4", "--retries", "2", "--backoff", "0.01", "--progress-interval", "1",
        "--manifest", str(out / "manifests" / split / f"{shard}.csv"),
        "--skipped", str(out / "manifests" / split / f"{shard}.skipped.csv"), *extra,
    ]


def run_job(*args, **kwargs) -> int:
    return run_cli(SCRIPT.main, job_args(*args, **kwargs))


def split_ids(demo: Path, split: str) -> list[str]:
    return sorted(set(pd.read_csv(demo / ID_LISTS[split], dtype=str)["ImageID"]))


# --------------------------------------------------------------------------- JPEG checks


def test_jpeg_size_accepts_complete_jpegs_and_rejects_cut_ones(demo):
    path = next((demo / "images" / "train").glob("*.jpg"))
    data = path.read_bytes()
    with Image.open(path) as img:
        assert jpeg_size(data) == img.size
    assert jpeg_size(data + b"camera trailer") == jpeg_size(data)  # bytes after EOI
    for cut, problem in [(len(data) // 2, "no EOI"), (len(data) - 1, "no EOI"),
                         (40, "truncated in its headers"), (0, "not a JPEG")]:
        with pytest.raises(JpegError, match=problem):
            jpeg_size(data[:cut])
    with pytest.raises(JpegError, match="not a JPEG"):
        jpeg_size(b"\x89PNG\r\n\x1a\n" + data)


# --------------------------------------------------------------------------- a whole split


def test_split_fetched_completely_byte_identical_then_nothing_refetched(demo, proxy, tmp_path):
    split = "validation"
    ids = split_ids(demo, split)
    drop = ids[0]  # annotations.drop_images of its shard: not fetched
    for h in HEX:
        assert run_job(demo, tmp_path, split, h, proxy.endpoint, "--drop-images", drop) == 0
    fetched = sorted(p.stem for p in (tmp_path / split).glob("*.jpg"))
    assert fetched == [i for i in ids if i != drop]
    for i in fetched:
        assert (tmp_path / split / f"{i}.jpg").read_bytes() == \
            (demo / "images" / split / f"{i}.jpg").read_bytes()
    assert not list((tmp_path / split).glob(".*.tmp"))
    # the manifests: every image once, with its true size, bytes and MD5
    manifests = sorted((tmp_path / "manifests" / split).glob("?.csv"))
    assert len(manifests) == 16
    table = pd.concat([pd.read_csv(m, dtype={"ImageID": str}) for m in manifests])
    assert list(table.columns) == ["ImageID", "Bytes", "ImageWidth", "ImageHeight", "MD5"]
    assert sorted(table["ImageID"]) == fetched
    for row in table.itertuples():
        data = (demo / "images" / split / f"{row.ImageID}.jpg").read_bytes()
        with Image.open(demo / "images" / split / f"{row.ImageID}.jpg") as img:
            assert (row.ImageWidth, row.ImageHeight) == img.size
        assert row.Bytes == len(data) and row.MD5 == hashlib.md5(data).hexdigest()
    sizes = read_manifests(manifests)
    assert len(sizes.index) == len(fetched)
    assert read_skipped(sorted((tmp_path / "manifests" / split).glob("?.skipped.csv"))) == []
    assert sum(proxy.key_gets(BUCKET).values()) == len(fetched)

    # a second run fetches nothing: from the resume state, then by reading the files
    proxy.reset()
    for h in HEX:
        assert run_job(demo, tmp_path, split, h, proxy.endpoint, "--drop-images", drop) == 0
    for cache in (tmp_path / "manifests" / split).glob(".*.verified.csv"):
        cache.unlink()
    for h in HEX:
        assert run_job(demo, tmp_path, split, h, proxy.endpoint, "--drop-images", drop) == 0
    assert proxy.key_gets(BUCKET) == {}
    # a damaged image in place is fetched again
    victim = tmp_path / split / f"{fetched[-1]}.jpg"
    victim.write_bytes(victim.read_bytes()[:100])
    assert run_job(demo, tmp_path, split, fetched[-1][0], proxy.endpoint) == 0
    assert proxy.key_gets(BUCKET) == {f"{split}/{fetched[-1]}.jpg": 1}
    assert victim.read_bytes() == (demo / "images" / split / victim.name).read_bytes()


# --------------------------------------------------------------------------- kill and resume


def test_sigkill_mid_shard_then_rerun_fetches_only_the_rest(demo, s3, tmp_path):
    # 40 objects of one shard ("a"), served slowly so that the kill lands mid-shard
    client = admin_client(s3)
    sources = sorted((demo / "images" / "train").glob("*.jpg"))
    ids = [f"a{i:015x}" for i in range(40)]
    for n, image_id in enumerate(ids):
        client.put_object(Bucket=BUCKET, Key=f"kill/{image_id}.jpg",
                          Body=sources[n % len(sources)].read_bytes())
    id_csv = tmp_path / "ids.csv"
    id_csv.write_text("ImageID\n" + "".join(f"{i}\n" for i in ids))
    out = tmp_path / "out"
    with FaultProxy(s3, delay_s=0.1) as slow:
        args = job_args(demo, out, "train", "a", slow.endpoint, ids=id_csv, prefix="kill")
        args[args.index("--threads") + 1] = "2"
        proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "download_images.py"),
                                 *args], env=env_with_venv(), stderr=subprocess.PIPE)
        try:
            deadline = time.time() + 60
            while len(list((out / "train").glob("a*.jpg"))) < 8:
                assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    present = {p.stem for p in (out / "train").glob("a*.jpg")}
    assert 8 <= len(present) < len(ids)  # killed mid-shard
    assert not (out / "manifests" / "train" / "a.csv").exists()  # no output of a killed job
    with FaultProxy(s3) as counting:
        args = job_args(demo, out, "train", "a", counting.endpoint, ids=id_csv, prefix="kill")
        assert run_cli(SCRIPT.main, args) == 0
        gets = counting.key_gets(BUCKET)
    assert set(gets) == {f"kill/{i}.jpg" for i in ids if i not in present}
    assert all(n == 1 for n in gets.values())
    for n, image_id in enumerate(ids):
        assert (out / "train" / f"{image_id}.jpg").read_bytes() == \
            sources[n % len(sources)].read_bytes()
    assert not list((out / "train").glob(".*.tmp"))  # the killed job's temporary file is gone
    assert len(pd.read_csv(out / "manifests" / "train" / "a.csv")) == len(ids)


# --------------------------------------------------------------------------- bad objects


def _one_id_csv(tmp_path: Path, image_id: str) -> Path:
    path = tmp_path / f"ids_{image_id}.csv"
    path.write_text(f"ImageID\n{image_id}\n")
    return path


def test_truncated_object_is_detected_and_skippable(demo, s3, tmp_path, capsys):
    client = admin_client(s3)
    data = next((demo / "images" / "train").glob("*.jpg")).read_bytes()
    image_id = "b000000000000001"
    client.put_object(Bucket=BUCKET, Key=f"faulty/{image_id}.jpg", Body=data[: len(data) // 2])
    ids = _one_id_csv(tmp_path, image_id)
    assert run_job(demo, tmp_path, "train", "b", s3, ids=ids, prefix="faulty") == 2
    err = capsys.readouterr().err
    assert image_id in err and "not a complete JPEG" in err and "no EOI" in err
    assert "drop_images" in err and "allow_missing" in err
    assert not (tmp_path / "train" / f"{image_id}.jpg").exists()
    assert not (tmp_path / "manifests" / "train" / "b.csv").exists()
    # allowed: skipped, listed, left out of the manifest
    assert run_job(demo, tmp_path, "train", "b", s3, "--allow-missing", "1", ids=ids,
                   prefix="faulty") == 0
    assert read_skipped([tmp_path / "manifests" / "train" / "b.skipped.csv"]) == [image_id]
    assert len(pd.read_csv(tmp_path / "manifests" / "train" / "b.csv")) == 0


@pytest.mark.parametrize("kind", ["cut", "short"])
def test_wrong_length_is_detected_and_retried(demo, proxy, tmp_path, capsys, kind):
    """cut: the body stops before the announced Content-Length; short: the
    Content-Length itself is shorter than the object (the MD5 of the ETag
    gives it away)."""
    split = "v5test"
    image_id = split_ids(demo, split)[0]
    key = f"/{BUCKET}/{PREFIXES[split]}/{image_id}.jpg"
    proxy.faults[key] = {"kind": kind, "times": None}  # every time
    ids = _one_id_csv(tmp_path, image_id)
    assert run_job(demo, tmp_path, split, image_id[0], proxy.endpoint, ids=ids) == 2
    err = capsys.readouterr().err
    assert "still failing after 2 retries" in err and image_id in err
    if kind == "short":  # moto also sends a CRC32, which botocore checks before our MD5
        assert "MD5" in err or "checksum" in err
    else:
        assert "IncompleteRead" in err or "bytes" in err
    assert proxy.key_gets(BUCKET)[key.removeprefix(f"/{BUCKET}/")] == 3  # 1 + 2 retries
    assert not (tmp_path / split / f"{image_id}.jpg").exists()
    # once the transfer is right again, the rerun gets it
    proxy.faults[key]["times"] = 1
    assert run_job(demo, tmp_path, split, image_id[0], proxy.endpoint, ids=ids) == 0
    assert (tmp_path / split / f"{image_id}.jpg").read_bytes() == \
        (demo / "images" / split / f"{image_id}.jpg").read_bytes()


def test_transient_503_is_retried(demo, proxy, tmp_path, capsys):
    split = "test"
    ids = split_ids(demo, split)
    key = f"/{BUCKET}/{PREFIXES[split]}/{ids[0]}.jpg"
    proxy.faults[key] = {"kind": "status", "status": 503, "times": 2}
    assert run_job(demo, tmp_path, split, ids[0][0], proxy.endpoint) == 0
    assert proxy.key_gets(BUCKET)[key.removeprefix(f"/{BUCKET}/")] == 3
    err = capsys.readouterr().err
    assert "503" in err and "retry 1/2" in err and "retry 2/2" in err
    assert (tmp_path / split / f"{ids[0]}.jpg").read_bytes() == \
        (demo / "images" / split / f"{ids[0]}.jpg").read_bytes()


def test_missing_object_is_listed_with_how_to_drop_it(demo, s3, tmp_path, capsys):
    split = "train"
    real = [i for i in split_ids(demo, split) if i[0] == split_ids(demo, split)[0][0]]
    gone = real[0][0] + "fffffffffffff00"[: 15]
    ids = tmp_path / "ids.csv"
    ids.write_text("ImageID\n" + "".join(f"{i}\n" for i in [*real, gone]))
    assert run_job(demo, tmp_path, split, gone[0], s3, ids=ids) == 2
    err = capsys.readouterr().err
    assert f"{gone}: not in the bucket (HTTP 404 NoSuchKey)" in err
    assert "annotations.drop_images" in err and f'"{gone}"' in err
    assert "download.allow_missing: 1" in err
    assert not (tmp_path / "manifests" / split / f"{gone[0]}.csv").exists()
    assert all((tmp_path / split / f"{i}.jpg").exists() for i in real)  # kept for the rerun
    # dropped: the job succeeds without it
    assert run_job(demo, tmp_path, split, gone[0], s3, "--drop-images", gone, ids=ids) == 0
    # the test split never skips: a submission covers every test image
    test_ids = tmp_path / "test_ids.csv"
    test_ids.write_text(f"ImageID\n{gone}\n")
    assert run_job(demo, tmp_path, "test", gone[0], s3, "--allow-missing", "5",
                   ids=test_ids) == 2
    assert "cannot be left out" in capsys.readouterr().err


def test_access_denied_stops_at_once(demo, s3, tmp_path, capsys):
    client = admin_client(s3)
    client.create_bucket(Bucket="private-bucket")  # no policy: anonymous GETs are refused
    upload_folder(client, "private-bucket", "validation", demo / "images" / "validation")
    shard = split_ids(demo, "validation")[0][0]
    args = job_args(demo, tmp_path, "validation", shard, s3)
    args[args.index("--bucket") + 1] = "private-bucket"
    assert run_cli(SCRIPT.main, args) == 2
    err = capsys.readouterr().err
    assert "HTTP 403" in err and "download.anonymous" in err


# --------------------------------------------------------------------------- the workflow


def _openimages_workdir(tmp_path: Path, demo: Path, endpoint: str | None = None) -> Path:
    workdir = new_workdir(tmp_path, "openimages.yaml")
    raw = workdir / "data" / "openimages"
    raw.mkdir(parents=True)
    for name in ID_LISTS.values():  # stand-ins for the official files (demo rows)
        shutil.copy(demo / name, raw / name)
    if endpoint:
        (workdir / "local_s3.yaml").write_text(
            f"download: {{endpoint_url: '{endpoint}', addressing_style: path, threads: 4}}\n")
    return workdir


@pytest.mark.workflow
def test_images_target_plans_64_download_jobs(demo, tmp_path):
    workdir = _openimages_workdir(tmp_path, demo)
    proc = snakemake("-n", "--cores", "2", "images", "--configfile", "openimages.yaml",
                     cwd=workdir)
    assert job_counts(proc.stdout) == {"download_images": 64, "images": 1}
    # the annotation stage waits for them (and fetches the annotation files first)
    counts = job_counts(snakemake("-n", "--cores", "2", "annotations", "--configfile",
                                  "openimages.yaml", cwd=workdir).stdout)
    assert counts["download_images"] == 64 and counts["train_sets"] == 1


@pytest.mark.workflow
def test_download_job_runs_in_the_workflow(demo, s3, tmp_path):
    """One real download_images job through Snakemake, against the local server."""
    workdir = _openimages_workdir(tmp_path, demo, s3)
    ids = split_ids(demo, "validation")
    shard = ids[0][0]
    target = f"data/openimages/images/manifests/validation/{shard}.csv"
    snakemake("--cores", "1", target, "--configfile", "openimages.yaml", "local_s3.yaml",
              cwd=workdir)
    manifest = pd.read_csv(workdir / target, dtype={"ImageID": str})
    assert sorted(manifest["ImageID"]) == [i for i in ids if i[0] == shard]
    for i in manifest["ImageID"]:
        assert (workdir / "data/openimages/images/validation" / f"{i}.jpg").read_bytes() == \
            (demo / "images" / "validation" / f"{i}.jpg").read_bytes()
    log = (workdir / f"logs/download_images/validation/{shard}.log").read_text()
    assert "fetched" in log and "images/s" in log


def test_annotation_stage_reads_manifests_and_skipped_lists(demo, s3, tmp_path):
    """build_annotations takes the sizes from the manifests (no image opened)
    and leaves the skipped images out of the held-out split."""
    from oidseg.errors import load_pickle

    build = importlib.util.spec_from_file_location("_script_build_annotations",
                                                   REPO / "scripts" / "build_annotations.py")
    module = importlib.util.module_from_spec(build)
    build.loader.exec_module(module)
    for h in HEX:
        assert run_job(demo, tmp_path, "validation", h, s3) == 0
    ids = split_ids(demo, "validation")
    skipped = tmp_path / "skipped.csv"
    skipped.write_text(f"ImageID,Reason\n{ids[3]},not in the bucket (HTTP 404 NoSuchKey)\n")
    common = ["--hierarchy", str(demo / "challenge-2019-label300-segmentable-hierarchy.json"),
              "--classes", str(demo / "challenge-2019-classes-description-segmentable.csv")]
    heldout = tmp_path / "heldout.csv"
    assert run_cli(module.main, ["heldout", *common, "--val-masks", str(demo / ID_LISTS["validation"]),
                                 "--size", str(len(ids) - 1), "--drop-images",
                                 "--drop-images-from", str(skipped), "--out", str(heldout)]) == 0
    chosen = pd.read_csv(heldout, dtype=str)["ImageID"].tolist()
    assert sorted(chosen) == [i for i in ids if i != ids[3]]
    out = tmp_path / "val_images.pkl"
    manifests = [str(p) for p in sorted((tmp_path / "manifests" / "validation").glob("?.csv"))]
    assert run_cli(module.main, ["images", *common, "--list", str(heldout),
                                 "--image-dir", str(tmp_path / "nowhere"),
                                 "--image-manifests", *manifests, "--source", "validation",
                                 "--out", str(out)]) == 0
    for record in load_pickle(out)["data_list"]:
        with Image.open(demo / "images" / "validation" / f"{record['img_id']}.jpg") as img:
            assert (record["width"], record["height"]) == img.size
