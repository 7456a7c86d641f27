#!/usr/bin/env bash
# Prepare the kit that bench/gpu_check.sh installs from on a GPU machine
# WITHOUT internet (run this where pip reaches PyPI). Only what that machine
# lacks: the device machine this project is lent (device tool, KINDS.md)
# already has Python 3.12, torch (CUDA), numpy, opencv-python-headless,
# matplotlib, pandas, scipy, pillow, pyyaml, rich, tqdm, pytest, ninja, wheel.
#
#   bench/make_gpu_wheels.sh DIR [PYTHON_VERSION] [PLATFORM]
#     DIR             output folder (created), e.g. gpu_wheels
#     PYTHON_VERSION  the GPU machine's Python (default: 3.12)
#     PLATFORM        pip platform tag (default: manylinux_2_28_x86_64, which
#                     also accepts the older manylinux wheels)
#
# It downloads, WITHOUT their dependencies (gpu_check.sh installs them with
# --no-deps, beside the machine's own packages): mmengine, mmdet, pycocotools,
# shapely, the small pure-Python packages they import (addict, yapf,
# platformdirs, termcolor, terminaltables), setuptools<81 (mmcv's setup.py
# imports pkg_resources), and the mmcv 2.1.0 source release, which
# gpu_check.sh builds there with its CUDA ops (or a prebuilt wheel put in
# DIR/mmcv-cache/ by ci/mmcv_build.py, reused when torch, CUDA and the
# arch list match). About 8 MB; with the repository well under the 64 MiB
# that travels to the device machine. The list is the import closure of
# tests/test_gpu.py and bench/bench_full_size.py (checked with
# `python -X importtime` here) minus that machine's packages.
set -euo pipefail

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
    sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
DIR=$1
PYVER=${2:-3.12}
PLATFORM=${3:-manylinux_2_28_x86_64}
PYTHON=${PYTHON:-python3}  # needs setuptools<81 for the sdist's metadata (see below)
mkdir -p "$DIR"

# the pins of pyproject.toml; pure-Python or binary wheels for that Python
REQS=(
    "mmengine==0.10.7" "mmdet==3.3.0" "pycocotools==2.0.11" "shapely>=2"
    "addict" "yapf" "platformdirs" "termcolor" "terminaltables" "setuptools<81"
)
echo "make_gpu_wheels: ${#REQS[@]} wheels for Python $PYVER on $PLATFORM (no dependencies) -> $DIR"
"$PYTHON" -m pip download -q --dest "$DIR" --only-binary=:all: --no-deps \
    --python-version "$PYVER" --implementation cp --platform "$PLATFORM" \
    --platform manylinux2014_x86_64 --platform any "${REQS[@]}"
echo "make_gpu_wheels: mmcv 2.1.0 source release -> $DIR"
# pip reads the sdist's metadata by running its setup.py, which imports
# pkg_resources (gone from setuptools >= 81): without build isolation, in
# this environment (the project's venv has setuptools<81; PYTHON=.venv/bin/python)
"$PYTHON" -m pip download -q --dest "$DIR" --no-binary=:all: --no-deps --no-build-isolation \
    "mmcv==2.1.0"
ls "$DIR" > "$DIR/MANIFEST.txt"
echo "make_gpu_wheels: $(wc -l < "$DIR/MANIFEST.txt") files, $(du -sh "$DIR" | cut -f1) in $DIR"
