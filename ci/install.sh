#!/usr/bin/env bash
# The install behind `make install` / `make demo` / `make test` (called by the
# Makefile when $VENV/.oidseg-installed is missing or older than pyproject.toml).
# It says what it does before each step, with the time it takes on 2 cores,
# and prints a line a minute during the long ones, so that a quiet terminal
# never looks like a hang.
#
# CPU (the default on a machine without an NVIDIA driver; CI):
#   venv, pip, torch 2.13.0, setuptools<81 + wheel + ninja,
#   mmcv 2.1.0 with its C++ ops (no build isolation), the package + test extras.
# CUDA (CUDA=1, or CUDA=auto where an NVIDIA driver is visible), on a machine
# with or without a GPU and with no system CUDA toolkit:
#   torch's CUDA build from PyPI (a local CPU torch wheel is kept out of the way),
#   the NVIDIA compiler and header wheels of the CUDA version torch pinned
#   (cuda-toolkit[nvcc,cccl]), a CUDA_HOME assembled inside the venv
#   ($VENV/cuda), mmcv 2.1.0 built with its CUDA ops for TORCH_CUDA_ARCH_LIST
#   (checked against what that nvcc can target) and kept as a wheel in
#   $MMCV_WHEEL_CACHE/<torch, CUDA, arch list, patches>/ for the next install.
# torch >= 2.14 (TORCH_VERSION=...): mmcv is built from its source release
# with the patches of ci/patches/mmcv-2.1.0 that apply (C++20, mmcv #3341).
# The steps and their decisions: ci/mmcv_build.py.
#
# Environment: PYTHON (python3), VENV (.venv), CUDA (auto | 1 | 0),
# TORCH_VERSION (2.13.0), TORCH_CUDA_ARCH_LIST (7.5;8.0;8.6;8.9;9.0+PTX),
# MAX_JOBS (CPU: 2; CUDA: all cores), MMCV_WHEEL_CACHE (~/.cache/oidseg/mmcv-2.1.0),
# PIP_FIND_LINKS (kept as it is; append a wheel folder, never replace it),
# HEARTBEAT_SECONDS (60).
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
PIP=("$PY" -m pip)
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=("$HERE/mmcv_build.py")
MODE=$("$PYTHON" "${BUILD[@]}" mode "${CUDA:-auto}")
PATCHED=0 # mmcv from its source release with patches (torch >= 2.14)
if [ -n "$("$PYTHON" "${BUILD[@]}" patches --torch-version "$TORCH_VERSION")" ]; then PATCHED=1; fi
STEPS=6
if [ "$MODE" = cuda ]; then STEPS=8; fi
n=0
started=$SECONDS

step() { # step "what" "expected time": announce the next step
  n=$((n + 1))
  printf '[install %d/%d] %s (%s)\n' "$n" "$STEPS" "$1" "$2"
}

heartbeat() { # heartbeat PID LABEL: a line a minute (wall clock) while PID runs
  local pid=$1 label=$2 begin=$SECONDS every=${HEARTBEAT_SECONDS:-60}
  local next=$every
  while kill -0 "$pid" 2> /dev/null; do
    sleep 1
    if [ $((SECONDS - begin)) -ge "$next" ] && kill -0 "$pid" 2> /dev/null; then
      printf '  ... %s: still working, %d min %02d s so far\n' "$label" $((next / 60)) $((next % 60))
      next=$((next + every))
    fi
  done
}

with_heartbeat() { # with_heartbeat LABEL CMD...: run CMD, a line a minute meanwhile
  local label=$1
  shift
  "$@" &
  local pid=$!
  heartbeat "$pid" "$label" &
  local beat=$!
  trap 'kill "$pid" "$beat" 2> /dev/null; exit 130' INT TERM
  local rc=0
  wait "$pid" || rc=$?
  kill "$beat" 2> /dev/null || true
  wait "$beat" 2> /dev/null || true
  trap - INT TERM
  return "$rc"
}

echo "Setting up $VENV for the $MODE (torch $TORCH_VERSION)."
if [ "$MODE" = cuda ]; then
  echo "First time: about 10 minutes of downloads (torch's CUDA build, NVIDIA's compiler wheels), then"
  echo "the mmcv CUDA build: about 45 minutes per GPU architecture on 2 cores, less with more cores (README, GPU)."
else
  echo "First time only: about 15 minutes on 2 cores, most of it building mmcv;"
  echo "about 2 minutes when pip already has the mmcv wheel. Every step is announced below."
fi
if [ -n "${PIP_FIND_LINKS:-}" ]; then
  echo "pip find-links: $PIP_FIND_LINKS"
fi

step "creating the virtual environment $VENV" "a few seconds"
test -x "$PY" || "$PYTHON" -m venv "$VENV"

step "upgrading pip" "under a minute"
"${PIP[@]}" install -q --upgrade pip

if [ "$MODE" = cuda ]; then
  step "installing torch $TORCH_VERSION, its CUDA build from PyPI, with NVIDIA's runtime wheels" \
    "several GB: 2-10 minutes to download, seconds when cached"
  # a CPU torch already in the venv would satisfy torch==X: replace it
  if "$PY" -c 'import sys, torch; sys.exit(0 if torch.version.cuda is None else 1)' 2> /dev/null; then
    "${PIP[@]}" uninstall -q -y torch
  fi
  # a local CPU torch wheel on PIP_FIND_LINKS would win over PyPI's CUDA build
  with_heartbeat "torch" env PIP_FIND_LINKS="$("$PY" "${BUILD[@]}" find-links --empty-dir "$VENV/.no-find-links")" \
    "${PIP[@]}" install -q "torch==$TORCH_VERSION"
  "$PY" -c 'import sys, torch; sys.exit(0 if torch.version.cuda else 1)' || {
    echo "install: torch $("$PY" -c 'import torch; print(torch.__version__)') in $VENV is a CPU build;" \
      "CUDA=1 needs the CUDA build (remove $VENV and retry, or install it by hand)" >&2
    exit 2
  }
else
  step "installing torch $TORCH_VERSION (CPU wheel where the machine has one)" "1-3 minutes to download, seconds when cached"
  with_heartbeat "torch" "${PIP[@]}" install -q "torch==$TORCH_VERSION"
fi

step "installing the mmcv build tools (setuptools<81, wheel, ninja)" "under a minute"
"${PIP[@]}" install -q 'setuptools<81' wheel ninja

if [ "$MODE" = cuda ]; then
  NVCC_REQ=$("$PY" "${BUILD[@]}" nvcc-requirement)
  step "installing NVIDIA's compiler and header wheels: $NVCC_REQ" "about 300 MB: a minute or two"
  with_heartbeat "nvcc wheels" "${PIP[@]}" install -q "$NVCC_REQ"

  step "assembling CUDA_HOME in $VENV/cuda and checking TORCH_CUDA_ARCH_LIST" "seconds"
  export CUDA_HOME
  CUDA_HOME=$("$PY" "${BUILD[@]}" cuda-home "$VENV/cuda")
  export TORCH_CUDA_ARCH_LIST
  TORCH_CUDA_ARCH_LIST=$("$PY" "${BUILD[@]}" arch-list --nvcc "$CUDA_HOME/bin/nvcc")
  echo "  CUDA_HOME=$CUDA_HOME ($("$CUDA_HOME/bin/nvcc" --version | tail -n 1)), TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
fi

if [ "$MODE" = cpu ] && [ "$PATCHED" = 0 ]; then
  step "building mmcv 2.1.0 with its C++ ops against torch" \
    "about 11 minutes on 2 cores, once; pip caches the wheel, later installs take seconds"
  with_heartbeat "mmcv build" env MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" \
    "${PIP[@]}" install -q --no-build-isolation mmcv==2.1.0
else
  if [ "$MODE" = cuda ]; then
    what="with its C++ and CUDA ops for $TORCH_CUDA_ARCH_LIST"
    took="about 45 minutes per architecture on 2 cores, once per (torch, CUDA, arch list); the wheel is kept"
  else
    what="with its C++ ops"
    took="about 11 minutes on 2 cores, once per torch; the wheel is kept"
  fi
  step "building mmcv 2.1.0 $what, patches: $("$PYTHON" "${BUILD[@]}" patches --torch-version "$TORCH_VERSION" | xargs -rn1 basename | paste -sd ' ' - | grep . || echo none)" "$took"
  WHEEL_OUT=$(mktemp)
  with_heartbeat "mmcv build" env MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "$PY" "${BUILD[@]}" wheel --mode "$MODE" --arch-list "${TORCH_CUDA_ARCH_LIST:-}" --path-file "$WHEEL_OUT"
  MMCV_WHEEL=$(cat "$WHEEL_OUT")
  rm -f "$WHEEL_OUT"
  echo "  wheel: $MMCV_WHEEL (point PIP_FIND_LINKS at its folder elsewhere)"
  "${PIP[@]}" install -q --force-reinstall --no-deps "$MMCV_WHEEL"
fi

step "installing oidseg with mmdet, mmengine, snakemake and the test tools" "1-3 minutes"
with_heartbeat "oidseg and its dependencies" "${PIP[@]}" install -q -e '.[test]'

echo "[install] done in $(((SECONDS - started) / 60)) min $(((SECONDS - started) % 60)) s"
