"""GPU id allocation for local multi-GPU runs (oidseg.gpu_alloc, scripts/with_gpus.py).

Uses fake GPU ids through $OIDSEG_GPUS and a private lock directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from oidseg.gpu_alloc import (
    CUDA_ENV,
    GpuAllocationError,
    assign_gpus,
    parse_gpu_ids,
    try_claim,
    visible_gpu_ids,
)

REPO = Path(__file__).resolve().parent.parent
WRAPPER = REPO / "scripts" / "with_gpus.py"

# A child that records its CUDA_VISIBLE_DEVICES, marks each of its ids busy
# with an O_EXCL file (fails if another job holds the same id), writes
# "ready", then waits for a "go" file (or a fixed time) before cleaning up.
CHILD = textwrap.dedent("""
    import os, sys, time
    out, busy_dir, go, hold = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    ids = [i for i in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if i]
    markers = []
    for gpu in ids:
        fd = os.open(os.path.join(busy_dir, gpu), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.close(fd)
        markers.append(os.path.join(busy_dir, gpu))
    with open(out + ".tmp", "w") as fh:
        fh.write(os.environ["CUDA_VISIBLE_DEVICES"])
    os.replace(out + ".tmp", out)
    end = time.monotonic() + hold
    while not os.path.exists(go) and time.monotonic() < end:
        time.sleep(0.02)
    for m in markers:
        os.remove(m)
    """)


def wait_for(predicate, what: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def gpu_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (CUDA_ENV, "SLURM_JOB_ID")}
    env["OIDSEG_GPUS"] = "0,1,2,3"
    env["OIDSEG_GPU_LOCK_DIR"] = str(tmp_path / "locks")
    env["PYTHONPATH"] = str(REPO)
    return env


@pytest.fixture
def child(tmp_path: Path) -> Path:
    path = tmp_path / "child.py"
    path.write_text(CHILD)
    (tmp_path / "busy").mkdir()
    return path


def wrapper_cmd(gpus: int, *command: str, extra: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, str(WRAPPER), "--gpus", str(gpus), *extra, "--", *command]


def child_cmd(child: Path, out: Path, go: Path, hold: float = 30.0) -> list[str]:
    return [sys.executable, str(child), str(out), str(child.parent / "busy"), str(go), str(hold)]


def all_free(env: dict[str, str], count: int = 4) -> bool:
    lease = try_claim(count, visible_gpu_ids(env), Path(env["OIDSEG_GPU_LOCK_DIR"]))
    if lease is None:
        return False
    lease.release()
    return True


# ---------------------------------------------------------------- id sources


def test_parse_gpu_ids() -> None:
    assert parse_gpu_ids("0,1, 2", "X") == ["0", "1", "2"]
    assert parse_gpu_ids("", "X") == []
    with pytest.raises(GpuAllocationError, match="duplicate"):
        parse_gpu_ids("0,0", "X")
    with pytest.raises(GpuAllocationError, match="invalid"):
        parse_gpu_ids("0,,1", "X")


def test_visible_ids_from_nvidia_smi_or_none(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = {"PATH": str(bin_dir)}
    assert visible_gpu_ids(env) == []  # no nvidia-smi at all
    smi = bin_dir / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        "echo 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa)'\n"
        "echo '  MIG 1g.10gb     Device  0: (UUID: MIG-bbbb)'\n"
        "echo 'GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-cccc)'\n"
    )
    smi.chmod(0o755)
    assert visible_gpu_ids(env) == ["0", "1"]
    assert visible_gpu_ids({**env, "OIDSEG_GPUS": "7"}) == ["7"]  # env var wins


# ---------------------------------------------------------------- in-process claims


def test_claims_are_disjoint_and_released(tmp_path: Path) -> None:
    ids = ["a", "b", "c"]
    first = try_claim(2, ids, tmp_path)
    second = try_claim(1, ids, tmp_path)
    assert first is not None and second is not None
    assert set(first.ids).isdisjoint(second.ids)
    assert try_claim(1, ids, tmp_path) is None  # all three taken
    first.release()
    third = try_claim(2, ids, tmp_path)
    assert third is not None and set(third.ids) == set(ids) - set(second.ids)
    with pytest.raises(GpuAllocationError, match="only 3 visible"):
        try_claim(4, ids, tmp_path)


def test_pass_through_and_zero_gpus(gpu_env: dict[str, str]) -> None:
    slurm = assign_gpus(2, {**gpu_env, "SLURM_JOB_ID": "42"})
    assert slurm.lease is None and CUDA_ENV not in slurm.env and "SLURM" in slurm.note
    preset = assign_gpus(2, {**gpu_env, CUDA_ENV: "3"})
    assert preset.lease is None and preset.env[CUDA_ENV] == "3"
    cpu = assign_gpus(0, {**gpu_env, CUDA_ENV: "3"})
    assert cpu.lease is None and cpu.env[CUDA_ENV] == ""
    none_visible = assign_gpus(2, {**gpu_env, "OIDSEG_GPUS": ""})
    assert none_visible.lease is None and none_visible.env[CUDA_ENV] == ""
    with pytest.raises(GpuAllocationError):
        assign_gpus(-1, gpu_env)
    # pass-through claims nothing: every id is still free
    assert all_free(gpu_env)


# ---------------------------------------------------------------- the wrapper CLI


def test_concurrent_wrappers_get_disjoint_ids(tmp_path: Path, gpu_env: dict[str, str], child: Path) -> None:
    go = tmp_path / "go"
    outs = [tmp_path / f"out{i}" for i in range(2)]
    procs = [subprocess.Popen(wrapper_cmd(2, *child_cmd(child, out, go)), env=gpu_env) for out in outs]
    try:
        wait_for(lambda: all(o.exists() for o in outs), "both children to start")
        ids = [o.read_text().split(",") for o in outs]
        assert all(len(i) == 2 for i in ids)
        assert set(ids[0]).isdisjoint(ids[1])
        assert set(ids[0]) | set(ids[1]) == {"0", "1", "2", "3"}
        assert not all_free(gpu_env, 1)  # every id is held while they run
    finally:
        go.touch()
        codes = [p.wait(timeout=30) for p in procs]
    assert codes == [0, 0]
    assert all_free(gpu_env)


def test_oversubscribed_wrappers_wait_instead_of_sharing(
    tmp_path: Path, gpu_env: dict[str, str], child: Path
) -> None:
    env = {**gpu_env, "OIDSEG_GPUS": "0,1"}
    go = tmp_path / "go"  # never created: each child holds its id for 0.4 s
    outs = [tmp_path / f"out{i}" for i in range(4)]
    procs = [subprocess.Popen(wrapper_cmd(1, *child_cmd(child, out, go, hold=0.4)), env=env) for out in outs]
    codes = [p.wait(timeout=60) for p in procs]
    # A child exits non-zero if another job held one of its ids at the same time.
    assert codes == [0, 0, 0, 0]
    assert all(o.read_text() in ("0", "1") for o in outs)  # one id each, from the pool


def test_exit_status_and_release_after_normal_exit(gpu_env: dict[str, str]) -> None:
    run = subprocess.run(
        wrapper_cmd(
            3, sys.executable, "-c", "import os, sys; print(os.environ['CUDA_VISIBLE_DEVICES']); sys.exit(5)"
        ),
        env=gpu_env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 5
    assert len(run.stdout.strip().split(",")) == 3
    assert all_free(gpu_env)


def test_zero_gpus_or_none_visible_means_cpu(gpu_env: dict[str, str], tmp_path: Path) -> None:
    show = (sys.executable, "-c", "import os; print(repr(os.environ['CUDA_VISIBLE_DEVICES']))")
    zero = subprocess.run(
        wrapper_cmd(0, *show), env={**gpu_env, CUDA_ENV: "0,1"}, capture_output=True, text=True, check=True
    )
    assert zero.stdout.strip() == "''"
    # no $OIDSEG_GPUS and no nvidia-smi on PATH: a GPU job runs on the CPU
    no_gpu_env = {k: v for k, v in gpu_env.items() if k != "OIDSEG_GPUS"}
    no_gpu_env["PATH"] = str(tmp_path)
    none = subprocess.run(wrapper_cmd(1, *show), env=no_gpu_env, capture_output=True, text=True, check=True)
    assert none.stdout.strip() == "''" and "running on CPU" in none.stderr


@pytest.mark.parametrize(
    "extra_env, expected",
    [({"SLURM_JOB_ID": "7"}, "unset"), ({CUDA_ENV: "5,6"}, "5,6")],
    ids=["slurm", "preset"],
)
def test_wrapper_pass_through(gpu_env: dict[str, str], extra_env: dict[str, str], expected: str) -> None:
    run = subprocess.run(
        wrapper_cmd(
            2, sys.executable, "-c", "import os; print(os.environ.get('CUDA_VISIBLE_DEVICES', 'unset'))"
        ),
        env={**gpu_env, **extra_env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.strip() == expected
    assert not (Path(gpu_env["OIDSEG_GPU_LOCK_DIR"]) / "gpu-0.lock").exists()


def test_ids_released_after_sigkill(tmp_path: Path, gpu_env: dict[str, str], child: Path) -> None:
    env = {**gpu_env, "OIDSEG_GPUS": "0,1"}
    out = tmp_path / "out"
    proc = subprocess.Popen(wrapper_cmd(2, *child_cmd(child, out, tmp_path / "never")), env=env)
    try:
        wait_for(out.exists, "the child to start")
        assert not all_free(env, 2)
        proc.send_signal(signal.SIGKILL)  # the wrapper has exec'd: this is the command
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    assert all_free(env, 2)


def test_ids_held_by_descendants_until_process_group_dies(
    tmp_path: Path, gpu_env: dict[str, str], child: Path
) -> None:
    """A shell command forks its worker; killing the shell alone keeps the ids
    held by the still-running worker; killing the group frees them."""
    env = {**gpu_env, "OIDSEG_GPUS": "0"}
    out = tmp_path / "out"
    script = " ".join(child_cmd(child, out, tmp_path / "never")) + " & wait"
    proc = subprocess.Popen(wrapper_cmd(1, "sh", "-c", script), env=env, start_new_session=True)
    try:
        wait_for(out.exists, "the worker to start")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert not all_free(env, 1)  # the orphaned worker still uses the GPU
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
    wait_for(lambda: all_free(env, 1), "the lock to be released after killpg")


def test_wait_timeout_and_impossible_request(gpu_env: dict[str, str]) -> None:
    lease = try_claim(4, visible_gpu_ids(gpu_env), Path(gpu_env["OIDSEG_GPU_LOCK_DIR"]))
    assert lease is not None
    try:
        run = subprocess.run(
            wrapper_cmd(1, "true", extra=("--timeout", "0.3")), env=gpu_env, capture_output=True, text=True
        )
        assert run.returncode == 2 and "no 1 free GPU" in run.stderr
    finally:
        lease.release()
    run = subprocess.run(wrapper_cmd(5, "true"), env=gpu_env, capture_output=True, text=True)
    assert run.returncode == 2 and "only 4 visible" in run.stderr
