"""Helpers for the tests that drive the workflow with `snakemake` itself."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def env_with_venv() -> dict[str, str]:
    """The rules call `python`: make it the one running the tests."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def snakemake_cmd(*args: str, checkout: Path = REPO) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(checkout / "Snakefile"), *args]


def snakemake(*args: str, cwd: Path, check: bool = True, timeout: int = 1800,
              checkout: Path = REPO) -> subprocess.CompletedProcess:
    """Run Snakemake in ``cwd`` on the Snakefile of ``checkout`` (this one by default)."""
    cmd = snakemake_cmd(*args, checkout=checkout)
    proc = subprocess.run(cmd, cwd=cwd, env=env_with_venv(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def job_counts(dry_run_output: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a (dry) run: rule -> number of jobs."""
    if "Job stats:" not in dry_run_output:
        return {}
    table = dry_run_output.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not match:
            break
        if match[1] != "total":
            counts[match[1]] = int(match[2])
    return counts


def new_workdir(path: Path, *run_configs: str) -> Path:
    """A working directory with the default config and the named run configs."""
    shutil.copy(REPO / "config.yaml", path / "config.yaml")
    for name in run_configs:
        shutil.copy(REPO / "configs/run" / name, path / name)
    return path
