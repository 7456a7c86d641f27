"""Shared fixtures: one real tiny end-to-end run per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from wf import new_workdir, snakemake

TINY = ("--configfile", "tiny.yaml")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The whole DAG (`all`) run for real on configs/run/tiny.yaml."""
    workdir = new_workdir(tmp_path_factory.mktemp("tiny_run"), "tiny.yaml")
    snakemake("--cores", "2", "all", *TINY, cwd=workdir, timeout=2400)
    return workdir
