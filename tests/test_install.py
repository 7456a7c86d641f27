"""The install that `make demo` / `make test` run (ci/install.sh) says what it
does: each step announced before it starts, with its expected time, and a
heartbeat during the long ones; the pip commands, pins and order unchanged.
Its CUDA path (issue 19) is tested at the end of this file.

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
    environ.update(VENV=str(venv), CALLS=str(tmp_path / "calls.txt"), HEARTBEAT_SECONDS="1", CUDA="0", **env)
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
                               "HEARTBEAT_SECONDS": "1", "CUDA": "0"},
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


# ------------------------------------------------------------ the CUDA path --
# ci/mmcv_build.py's decisions, and ci/install.sh CUDA=1 end to end with a
# real (empty) venv whose torch is a stand-in "2.15.0+cu130" and whose
# `pip` records instead of installing: seconds, no download, no GPU.

import importlib.util  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

_spec = importlib.util.spec_from_file_location("mmcv_build", REPO / "ci" / "mmcv_build.py")
mmcv_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mmcv_build)

NVCC_CODES = " ".join(f"sm_{a}" for a in (75, 80, 86, 87, 88, 89, 90, "90a", 100, "100a", 103, 110, 120, 121))


def fake_cuda_wheels(site: Path, cuda_major: str = "13", cccl_under_include: bool = True) -> Path:
    """site-packages/nvidia/cu<major> as NVIDIA's wheels lay it out."""
    root = site / "nvidia" / f"cu{cuda_major}"
    for rel in ("include/cuda_runtime.h", "include/crt/host_config.h",
                "include/cccl/cub/cub.cuh" if cccl_under_include else "include/cub/cub.cuh",
                "nvvm/bin/cicc", "lib/libcudart.so.13", "lib/libcublas.so.13"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("")
    nvcc = root / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True, exist_ok=True)
    nvcc.write_text("#!/bin/sh\ncase \"$1\" in --list-gpu-code) echo " + NVCC_CODES.replace(" ", "\\\\n")
                    + " | tr '\\\\\\\\n' '\\\\n';; --version) echo 'Cuda compilation tools, release 13.2';; esac\n")
    nvcc.chmod(0o755)
    return root


def test_mode_follows_the_nvidia_driver(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-x)'\n")
    smi.chmod(0o755)
    assert mmcv_build.resolve_mode("1") == "cuda" and mmcv_build.resolve_mode("0") == "cpu"
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert mmcv_build.resolve_mode("auto") == "cuda"
    smi.write_text("#!/bin/sh\nexit 9\n")  # a driver that does not answer
    if not Path("/proc/driver/nvidia/version").exists():
        assert mmcv_build.resolve_mode("auto") == "cpu"
    with pytest.raises(mmcv_build.BuildError, match="CUDA='maybe'"):
        mmcv_build.resolve_mode("maybe")


def test_find_links_drop_a_folder_with_a_cpu_torch(tmp_path):
    cpu, other = tmp_path / "cpu", tmp_path / "other"
    cpu.mkdir()
    other.mkdir()
    (cpu / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    empty = tmp_path / "empty"
    assert mmcv_build.find_links_without_cpu_torch([str(cpu), str(other)], empty) == str(other)
    assert mmcv_build.find_links_without_cpu_torch([f"file://{cpu}"], empty) == str(empty)
    assert empty.is_dir() and not any(empty.iterdir())  # stands in: never an empty variable


def test_nvcc_wheels_follow_the_cuda_version_torch_pinned():
    info = {"version": "2.15.0+cu130", "cuda": "13.0", "toolkit_pin": "13.2.2"}
    assert mmcv_build.nvcc_requirement(info) == "cuda-toolkit[nvcc,cccl]==13.2.2"
    assert mmcv_build.nvcc_requirement({**info, "toolkit_pin": None}) == "cuda-toolkit[nvcc,cccl]==13.0.*"
    with pytest.raises(mmcv_build.BuildError, match="is a CPU build"):
        mmcv_build.nvcc_requirement({**info, "cuda": None})


def test_cuda_home_assembled_from_the_wheels(tmp_path):
    root = fake_cuda_wheels(tmp_path / "site")
    home = mmcv_build.assemble_cuda_home(root, tmp_path / "venv" / "cuda")
    for name in ("bin", "include", "nvvm"):
        assert (home / name).is_symlink() and (home / name).resolve() == (root / name).resolve()
    assert os.readlink(home / "lib64" / "libcudart.so") == "libcudart.so.13"  # what -lcudart needs
    assert (home / "lib64" / "libcublas.so").exists()
    assert mmcv_build.assemble_cuda_home(root, home) == home  # again: rebuilt, same result
    (root / "include" / "cccl" / "cub" / "cub.cuh").unlink()
    with pytest.raises(mmcv_build.BuildError, match="lacks include/cccl/cub/cub.cuh or include/cub/cub.cuh"):
        mmcv_build.assemble_cuda_home(root, home)


def test_arch_list_is_checked_against_what_nvcc_targets(tmp_path):
    nvcc = fake_cuda_wheels(tmp_path) / "bin" / "nvcc"
    supported = mmcv_build.nvcc_archs(nvcc)
    assert {"sm_75", "sm_90", "sm_90a", "sm_120"} <= supported
    assert mmcv_build.check_arch_list(mmcv_build.DEFAULT_ARCH_LIST, supported, "13.0") == "7.5;8.0;8.6;8.9;9.0+PTX"
    assert mmcv_build.check_arch_list("8.6 9.0a+PTX", supported, "13.0") == "8.6;9.0a+PTX"
    with pytest.raises(mmcv_build.BuildError, match=r"cannot target 7\.0; it targets sm_75 to sm_121 "
                                                    r"\(CUDA 13 dropped compute capability < 7\.5, e\.g\. V100"):
        mmcv_build.check_arch_list("7.0;8.0", supported, "13.0")
    with pytest.raises(mmcv_build.BuildError, match="'Hopper' is not a compute capability"):
        mmcv_build.check_arch_list("Hopper", supported, "13.0")


def test_patches_apply_where_torch_needs_them():
    patches = mmcv_build.select_patches("2.13.0")
    assert patches == []
    for version in ("2.14.0", "2.15.0+cu130"):
        assert [p.name for p in mmcv_build.select_patches(version)] == ["0001-cxx20-for-torch-2.14.patch"]
    for patch in mmcv_build.PATCH_DIR.glob("*.patch"):
        text = patch.read_text()
        assert "Upstream: https://github.com/open-mmlab/mmcv/issues/" in text, patch
        assert mmcv_build.patch_condition(patch).startswith("torch ")


def cuda_venv(tmp_path: Path) -> tuple[Path, Path]:
    """A real venv (no pip) with a stand-in CUDA torch 2.15.0 and NVIDIA's
    wheels laid out; its `python -m pip` and the mmcv build record."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c",
                                "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "torch").mkdir()
    (site / "torch" / "__init__.py").write_text(
        "__version__ = '2.15.0+cu130'\nclass version:\n    cuda = '13.0'\n")
    info = site / "torch-2.15.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: torch\nVersion: 2.15.0\n"
        "Requires-Dist: cuda-toolkit[cublas,cudart]==13.2.2; platform_system == \"Linux\"\n")
    fake_cuda_wheels(site)
    real = venv / "bin" / "python.real"
    (venv / "bin" / "python").rename(real)
    (venv / "bin" / "python").write_text(
        "#!/usr/bin/env bash\n"
        'case "$*" in\n'
        '  "-m pip"*) echo "pip ${*:3} | PIP_FIND_LINKS=$PIP_FIND_LINKS" >> "$CALLS";;\n'
        '  *"mmcv_build.py wheel"*) echo "build ${*:3} | CUDA_HOME=$CUDA_HOME MAX_JOBS=$MAX_JOBS" >> "$CALLS";'
        ' sleep 2.5; echo /cache/mmcv-2.1.0-cp311-cp311-linux_x86_64.whl | tee "${@: -1}";;\n'
        f'  *) exec "{real}" "$@";;\n'
        "esac\n")
    (venv / "bin" / "python").chmod(0o755)
    return venv, site


def test_install_cuda_path_assembles_what_the_build_needs(tmp_path):
    venv, site = cuda_venv(tmp_path)
    cpu_links = tmp_path / "cpu-wheels"
    cpu_links.mkdir()
    (cpu_links / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    env = {k: v for k, v in os.environ.items() if k not in ("MAX_JOBS", "TORCH_CUDA_ARCH_LIST", "CUDA_HOME")}
    env.update(VENV=str(venv), CALLS=str(tmp_path / "calls.txt"), CUDA="1", TORCH_VERSION="2.15.0",
               PIP_FIND_LINKS=f"{cpu_links} {tmp_path}/extra", HEARTBEAT_SECONDS="1", PIP_CONFIG_FILE="/dev/null")
    proc = subprocess.run(["bash", str(REPO / "ci" / "install.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    torch_call = next(c for c in calls if "torch==2.15.0" in c)
    assert "cpu-wheels" not in torch_call and f"{tmp_path}/extra" in torch_call  # PyPI's CUDA build wins
    assert any(c.startswith("pip install -q cuda-toolkit[nvcc,cccl]==13.2.2 ") for c in calls), calls
    build = next(c for c in calls if c.startswith("build "))
    assert "--mode cuda --arch-list 7.5;8.0;8.6;8.9;9.0+PTX" in build
    assert f"CUDA_HOME={venv}/cuda" in build
    assert os.readlink(venv / "cuda" / "lib64" / "libcudart.so") == "libcudart.so.13"
    # the heartbeat's lines during the build do not end up in the wheel's name
    assert "mmcv build: still working" in proc.stdout
    assert any(c.startswith("pip install -q --force-reinstall --no-deps /cache/mmcv-2.1.0-cp311-cp311-linux_x86_64.whl | ")
               for c in calls), calls
    assert "patches: 0001-cxx20-for-torch-2.14.patch" in proc.stdout
    steps = [line for line in proc.stdout.splitlines() if line.startswith("[install ")]
    assert len(steps) == 8 and steps[-1].startswith("[install 8/8] installing oidseg")


def test_install_refuses_an_architecture_cuda_cannot_target(tmp_path):
    venv, _ = cuda_venv(tmp_path)
    env = {**os.environ, "VENV": str(venv), "CALLS": str(tmp_path / "calls.txt"), "CUDA": "1",
           "TORCH_VERSION": "2.15.0", "TORCH_CUDA_ARCH_LIST": "7.0", "HEARTBEAT_SECONDS": "1"}
    proc = subprocess.run(["bash", str(REPO / "ci" / "install.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "mmcv_build: TORCH_CUDA_ARCH_LIST: CUDA 13.0's nvcc cannot target 7.0" in proc.stderr
    assert not any(c.startswith("build ") for c in (tmp_path / "calls.txt").read_text().splitlines())
