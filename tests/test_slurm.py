"""`snakemake --profile slurm` on a real one-node SLURM cluster on localhost.

The cluster comes from ci/start_slurm.sh (root only; installs Debian's SLURM
with apt-get if missing). Where it cannot start, the tests are skipped with the
script's reason. The profile used is the repository's slurm/config.yaml with
the test overrides of tests/slurm_test_profile/config.yaml merged on top.
"""

from __future__ import annotations

import copy
import filecmp
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from wf import job_counts

REPO = Path(__file__).resolve().parent.parent
START_SCRIPT = REPO / "ci" / "start_slurm.sh"
REPO_PROFILE = REPO / "slurm" / "config.yaml"
TEST_OVERRIDES = Path(__file__).resolve().parent / "slurm_test_profile" / "config.yaml"
SNAKEMAKE_TIMEOUT_S = 600  # hard kill: a plugin stuck on status checks never exits

pytestmark = pytest.mark.slurm


@dataclass(frozen=True)
class Cluster:
    cpus: int
    gpus: int


@pytest.fixture(scope="module")
def slurm_cluster() -> Cluster:
    if os.geteuid() != 0:
        pytest.skip(f"local SLURM cluster needs root to install and start daemons (uid {os.geteuid()})")
    if shutil.which("bash") is None:
        pytest.skip("bash not found: cannot run ci/start_slurm.sh")
    try:
        proc = subprocess.run(
            ["bash", str(START_SCRIPT)], capture_output=True, text=True, timeout=900, cwd="/tmp"
        )
    except subprocess.TimeoutExpired:
        pytest.skip("ci/start_slurm.sh did not finish within 900 s")
    if proc.returncode != 0:
        reasons = [line for line in proc.stderr.splitlines() if line.startswith("start_slurm:")]
        reason = reasons[-1] if reasons else proc.stderr.strip()[-500:]
        pytest.skip(f"local SLURM cluster unavailable: {reason}")
    info = subprocess.run(
        ["sinfo", "-h", "-o", "%c %G"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    gpus = re.search(r"gpu:(\d+)", info[1]) if len(info) > 1 else None
    return Cluster(cpus=int(info[0]), gpus=int(gpus[1]) if gpus else 0)


def deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def write_test_profile(workdir: Path, cluster: Cluster) -> dict:
    """<workdir>/slurm/config.yaml = repo profile + test overrides, sized for the node."""
    profile = deep_merge(yaml.safe_load(REPO_PROFILE.read_text()), yaml.safe_load(TEST_OVERRIDES.read_text()))
    cap_mem = profile["default-resources"]["mem_mb"]
    profile["default-resources"]["cpus_per_task"] = f"min(threads, {cluster.cpus})"
    for resources in profile.get("set-resources", {}).values():
        if "mem_mb" in resources:
            resources["mem_mb"] = cap_mem
        if resources.get("cpus_per_task") not in (None, "None"):
            resources["cpus_per_task"] = f"min(threads, {cluster.cpus})"
    (workdir / "slurm").mkdir(parents=True, exist_ok=True)
    (workdir / "slurm" / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return profile


def clean_env(**extra: str) -> dict[str, str]:
    """Environment for snakemake: the venv first on PATH, no inherited GPU/SLURM state."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "CUDA_VISIBLE_DEVICES" and not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', os.defpath)}"
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def snakemake(workdir: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", *args]
    try:
        return subprocess.run(
            cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=SNAKEMAKE_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{' '.join(cmd)} hung for {SNAKEMAKE_TIMEOUT_S} s in {workdir}") from exc


def check_ok(proc: subprocess.CompletedProcess, what: str) -> str:
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{what} failed (exit {proc.returncode}):\n{log[-6000:]}"
    return log


def sbatch_calls(log: str) -> list[str]:
    return [line for line in log.splitlines() if "sbatch call:" in line]


def submitted_rule_counts(calls: list[str]) -> dict[str, int]:
    """Jobs per rule from the plugin's `--comment rule_<rule>[_wildcards_<...>]`."""
    counts: dict[str, int] = {}
    for call in calls:
        match = re.search(r"--comment '?rule_(\w+?)(?:_wildcards_\S*?)?'?(?:\s|$)", call)
        assert match, f"no rule name in: {call}"
        counts[match[1]] = counts.get(match[1], 0) + 1
    return counts


def tree_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


# ---------------------------------------------------------------- toy workflow

TOY_SNAKEFILE = """
NAMES = ["alpha", "beta"]

localrules: all

rule all:
    input: "out/total.txt"

rule make:
    output: data="out/{name}.txt", prov="prov/make_{name}.txt"
    shell:
        "echo {wildcards.name} | rev > {output.data}; "
        "echo ${{SLURM_JOB_ID:-local}} > {output.prov}"

rule train:
    input: expand("out/{name}.txt", name=NAMES)
    output: data="out/total.txt", prov="prov/train.txt"
    resources: gpu=1
    params: py=@PY@, wrapper=@WRAPPER@
    shell:
        "{params.py} {params.wrapper} --gpus {resources.gpu} -- sh -c "
        "'sort {input} > {output.data}; "
        "echo ${{SLURM_JOB_ID:-local}} $CUDA_VISIBLE_DEVICES > {output.prov}'"
"""


def write_toy(workdir: Path) -> None:
    workdir.mkdir(parents=True)
    text = TOY_SNAKEFILE.replace("@PY@", repr(sys.executable)).replace(
        "@WRAPPER@", repr(str(REPO / "scripts" / "with_gpus.py"))
    )
    (workdir / "Snakefile").write_text(text)


def test_toy_workflow_runs_through_sbatch(slurm_cluster: Cluster, tmp_path: Path) -> None:
    if slurm_cluster.gpus < 1:
        pytest.skip("the local SLURM node has no (fake) GPU")
    local, remote = tmp_path / "local", tmp_path / "slurm_run"
    write_toy(local)
    write_toy(remote)

    env_local = clean_env(OIDSEG_GPUS="0,1", OIDSEG_GPU_LOCK_DIR=str(tmp_path / "locks"))
    check_ok(snakemake(local, "--cores", "2", "--resources", "gpu=2", env=env_local), "local run")

    write_test_profile(remote, slurm_cluster)
    log = check_ok(snakemake(remote, "--profile", "slurm", "--verbose", env=clean_env()), "SLURM run")

    # Every job but the local target rule went through sbatch, GPU job with --gpus.
    calls = sbatch_calls(log)
    assert submitted_rule_counts(calls) == {"make": 2, "train": 1}, "\n".join(calls)
    (train_call,) = [c for c in calls if "--comment rule_train" in c]
    assert "--gpus=1" in train_call and "--cpus-per-gpu=1" in train_call
    assert all(" -t " in c and " --mem " in c for c in calls)

    # Each job ran as its own SLURM job and the GPU job saw its GPU.
    job_ids = [(remote / "prov" / f"make_{n}.txt").read_text().split()[0] for n in ("alpha", "beta")]
    train_id, train_gpu = (remote / "prov" / "train.txt").read_text().split()
    job_ids.append(train_id)
    assert all(j.isdigit() for j in job_ids) and len(set(job_ids)) == 3
    assert train_gpu in {str(i) for i in range(slurm_cluster.gpus)}
    local_id, local_gpu = (local / "prov" / "train.txt").read_text().split()
    assert local_id == "local" and local_gpu in {"0", "1"}

    # The profile's log folder holds one kept log per SLURM job.
    logs = sorted((remote / "logs" / "slurm").rglob("*.log"))
    assert sorted(p.stem for p in logs) == sorted(job_ids)

    # Same results as the local run.
    assert tree_files(remote / "out") == tree_files(local / "out") == {"alpha.txt", "beta.txt", "total.txt"}
    match, mismatch, errors = filecmp.cmpfiles(
        remote / "out", local / "out", ["alpha.txt", "beta.txt", "total.txt"], shallow=False
    )
    assert mismatch == [] and errors == []
    assert (remote / "out" / "total.txt").read_text() == "ahpla\nateb\n"


# ---------------------------------------------------------------- the real workflow


def prepare_real_workdir(workdir: Path) -> None:
    workdir.mkdir(parents=True)
    shutil.copy(REPO / "config.yaml", workdir / "config.yaml")


@pytest.mark.workflow
def test_real_workflow_annotations_on_slurm(slurm_cluster: Cluster, tmp_path: Path) -> None:
    target = "annotations"
    if not (REPO / "Snakefile").is_file() or not (REPO / "config.yaml").is_file():
        pytest.skip("the workflow (Snakefile, config.yaml) does not exist yet")
    probe = tmp_path / "probe"
    prepare_real_workdir(probe)
    rules = snakemake(probe, "--snakefile", str(REPO / "Snakefile"), "--list-rules", env=clean_env())
    if rules.returncode != 0:
        pytest.skip(f"the Snakefile does not parse yet: {(rules.stdout + rules.stderr)[-800:]}")
    if target not in rules.stdout.split():
        pytest.skip(f"the workflow has no target rule '{target}' yet")

    local, remote = tmp_path / "local", tmp_path / "slurm_run"
    prepare_real_workdir(local)
    prepare_real_workdir(remote)
    snakefile = ("--snakefile", str(REPO / "Snakefile"))

    ref = snakemake(local, *snakefile, "--cores", "2", target, env=clean_env())
    if ref.returncode != 0:
        pytest.skip(
            f"the local reference run of '{target}' fails, so there is nothing to compare "
            f"the SLURM run with (see tests/test_workflow.py):\n{(ref.stdout + ref.stderr)[-1500:]}"
        )

    write_test_profile(remote, slurm_cluster)
    log = check_ok(
        snakemake(remote, *snakefile, "--profile", "slurm", "--verbose", target, env=clean_env()),
        f"SLURM run of '{target}'",
    )
    # Every job of the local run except the target rule itself (no command,
    # Snakemake runs it in the controller) became one SLURM job.
    expected_jobs = job_counts(ref.stdout + ref.stderr)
    expected_jobs.pop(target)
    assert submitted_rule_counts(sbatch_calls(log)) == expected_jobs

    expected = tree_files(local / "results")
    assert expected, "the local run wrote no results"
    assert tree_files(remote / "results") == expected
    _, mismatch, errors = filecmp.cmpfiles(
        remote / "results", local / "results", sorted(expected), shallow=False
    )
    assert mismatch == [] and errors == [], f"SLURM and local results differ: {mismatch + errors}"


@pytest.mark.workflow
def test_post_processing_on_slurm(slurm_cluster: Cluster, tiny_run: Path, tmp_path: Path) -> None:
    """The post-processing rules of a real tiny run go through sbatch and give
    byte-identical files to the local run (inference outputs are reused: a
    requested target whose intermediates exist does not rerun the GPU rules)."""
    remote = tmp_path / "slurm_post"
    remote.mkdir()
    for name in ("config.yaml", "tiny.yaml"):
        shutil.copy(tiny_run / name, remote / name)
    for folder in ("data", "results"):
        shutil.copytree(tiny_run / folder, remote / folder)  # copy2 keeps mtimes
    shutil.rmtree(remote / "results/post")
    for name in ("submission.csv", "submission.ok"):
        (remote / "results" / name).unlink()
    write_test_profile(remote, slurm_cluster)
    args = ("--snakefile", str(REPO / "Snakefile"), "--configfile", "tiny.yaml")
    log = check_ok(
        snakemake(remote, *args, "--profile", "slurm", "--verbose", "submission", env=clean_env()),
        "SLURM run of 'submission'",
    )
    shards = len(list((tiny_run / "results/post/test/merged").glob("*.csv")))
    assert submitted_rule_counts(sbatch_calls(log)) == {
        "convert": 2 * shards,
        "expand_hierarchy": 2 * shards,
        "merge": shards,
        "combine": 1,
        "validate_submission": 1,
    }
    for name in ("submission.csv", "submission.ok"):
        assert filecmp.cmp(remote / "results" / name, tiny_run / "results" / name, shallow=False), name
