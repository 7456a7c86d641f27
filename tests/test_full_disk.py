"""A full disk is a one-line error naming what could not be written, exit 2,
and no partial output (issue 18, item 6): convert, expand, merge (here, on
a finished tiny run's files) and train (tests/test_train_guards.py).

As root, the output folder is a full 4 KiB tmpfs in a private mount
namespace (a real ENOSPC); otherwise a file size limit of 1 byte stands in
(EFBIG)."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tmpfs_works() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=4k none /mnt"],
                           capture_output=True)
    return probe.returncode == 0


TMPFS = _tmpfs_works()


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1, 1))


def run_on_full_disk(cmd: list[str], out_dir: Path) -> subprocess.CompletedProcess:
    """Run ``cmd`` with ``out_dir`` on a (nearly) full file system."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    if TMPFS:
        fill = 'mount -t tmpfs -o size=4k none "$0" && (head -c 8192 /dev/zero > "$0/.fill" || true) && exec "$@"'
        cmd = ["unshare", "-m", "sh", "-c", fill, str(out_dir), *cmd]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600,
                          preexec_fn=_limit_file_size)


def assert_clear_write_error(proc: subprocess.CompletedProcess, out: Path) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: {out}") and "could not be written" in error, error
    assert "No space left on device" in error or "File too large" in error, error
    assert "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.workflow
@pytest.mark.slow
@pytest.mark.parametrize("step", ["convert", "expand", "merge"])
def test_postprocessing_on_a_full_disk_is_a_clear_error(tiny_run, tmp_path, step):
    results = tiny_run / "results"
    out = tmp_path / "out" / "00.csv"
    args = {
        "convert": ["convert.py", "--detections", results / "inference/leaf/test/00.pkl"],
        "expand": ["expand.py", "--input", results / "post/test/leaf/00.csv",
                   "--classes-json", results / "annotations/classes.json", "--parents-only"],
        "merge": ["merge.py", "--inputs", results / "post/test/leaf_expanded/00.csv",
                  results / "post/test/parent_expanded/00.csv"],
    }[step]
    cmd = [sys.executable, str(ROOT / "scripts" / args[0]), *map(str, args[1:]), "--out", str(out)]
    proc = run_on_full_disk(cmd, out.parent)
    assert_clear_write_error(proc, out)
