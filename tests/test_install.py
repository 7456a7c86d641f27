"""The install that `make demo` / `make test` run (ci/install.sh) says what it
does: each step announced before it starts, with its expected time, and a
heartbeat during the long ones; the pip commands, pins and order unchanged.

The venv here is a stand-in whose `python` records its arguments (and takes
a few seconds for the mmcv build), so that the script's own behaviour is
tested in a second, without installing anything."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

EXPECTED_CALLS = [
    "-m pip install -q --upgrade pip",
    "-m pip install -q torch==2.13.0",
    "-m pip install -q setuptools<81 wheel ninja",
    "-m pip install -q --no-build-isolation mmcv==2.1.0 | MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=2",
    "-m pip install -q -e .[test]",
]


def stand_in_venv(root: Path) -> Path:
    venv = root / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(
        "#!/usr/bin/env bash\n"
        'line="$*"\n'
        'case "$line" in *mmcv==2.1.0*) line="$line | MMCV_WITH_OPS=$MMCV_WITH_OPS '
        'FORCE_CUDA=$FORCE_CUDA MAX_JOBS=$MAX_JOBS"; sleep 3.5;; esac\n'
        'echo "$line" >> "$CALLS"\n'
        'echo "CALL $line"\n'
    )
    python.chmod(0o755)
    return venv


def run_install(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    venv = stand_in_venv(tmp_path)
    environ = {k: v for k, v in os.environ.items() if k not in ("FORCE_CUDA", "MAX_JOBS")}
    environ.update(VENV=str(venv), CALLS=str(tmp_path / "calls.txt"), HEARTBEAT_SECONDS="1", **env)
    return subprocess.run(["bash", str(REPO / "ci" / "install.sh")], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=120)


def test_install_announces_each_step_and_beats_during_the_mmcv_build(tmp_path):
    proc = run_install(tmp_path)
    assert proc.returncode == 0, proc.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert calls == EXPECTED_CALLS  # same pins, same order, same build settings
    lines = proc.stdout.splitlines()
    steps = [k for k, line in enumerate(lines) if line.startswith("[install ")]
    runs = [k for k, line in enumerate(lines) if line.startswith("CALL ")]
    # every pip call is preceded by its own announcement (6 steps: venv + 5 pip calls)
    assert len(steps) == 6 and len(runs) == 5
    for step, run in zip(steps[1:], runs):
        assert step < run
        assert all(not lines[k].startswith("CALL ") for k in range(step + 1, run))
    mmcv = next(line for line in lines if "building mmcv 2.1.0" in line)
    assert "about 11 minutes on 2 cores, once; pip caches the wheel" in mmcv
    assert all(re.search(r"\(.+\)$", lines[k]) for k in steps)  # expected time in brackets
    build = lines.index(mmcv)
    beats = [line for line in lines[build:steps[5]] if "mmcv build: still working" in line]
    assert len(beats) >= 2
    assert lines[-1].startswith("[install] done in ")


def test_install_stops_at_a_failing_step(tmp_path):
    venv = stand_in_venv(tmp_path)
    python = venv / "bin" / "python"
    python.write_text(python.read_text().replace(
        'echo "CALL $line"\n', 'echo "CALL $line"\ncase "$line" in *torch*) exit 7;; esac\n'))
    proc = subprocess.run(["bash", str(REPO / "ci" / "install.sh")], cwd=tmp_path,
                          env={**os.environ, "VENV": str(venv), "CALLS": str(tmp_path / "c.txt"),
                               "HEARTBEAT_SECONDS": "1"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 7
    assert "mmcv" not in (tmp_path / "c.txt").read_text()
    assert "[install] done" not in proc.stdout


def test_make_runs_the_talking_install_when_the_venv_is_missing(tmp_path):
    proc = subprocess.run(["make", "-n", "-C", str(REPO), f"VENV={tmp_path / 'v'}", "install"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "bash ci/install.sh" in proc.stdout
    assert f"touch {tmp_path / 'v'}/.oidseg-installed" in proc.stdout
