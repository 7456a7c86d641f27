#!/usr/bin/env bash
# Prepare the wheel folder that bench/gpu_check.sh installs from on a GPU
# machine WITHOUT internet (run this where pip can reach PyPI).
#
#   bench/make_gpu_wheels.sh DIR [PYTHON_VERSION] [PLATFORM]
#     DIR             output folder (created), e.g. gpu_wheels
#     PYTHON_VERSION  the GPU machine's Python, e.g. 3.12 (default: 3.12)
#     PLATFORM        pip platform tag (default: manylinux_2_28_x86_64, which
#                     also accepts the older manylinux wheels)
#
# It downloads binary wheels for THAT Python and platform (pip download
# --python-version ... --only-binary=:all:): mmengine, mmdet and everything
# they, mmcv's build and the GPU tests need (numpy, opencv, pycocotools,
# scipy, shapely, matplotlib, pytest, setuptools<81, wheel, ninja, ...), but
# NOT torch (the GPU machine's own CUDA torch is used, whatever its version),
# plus the mmcv 2.1.0 source release, which gpu_check.sh builds there with
# its CUDA ops. About 150 MB. Copy DIR to the GPU machine next to the repo.
set -euo pipefail

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
DIR=$1
PYVER=${2:-3.12}
PLATFORM=${3:-manylinux_2_28_x86_64}
PYTHON=${PYTHON:-python3}  # needs setuptools<81 (see below)
mkdir -p "$DIR"

# the pins of pyproject.toml (torch excepted)
REQS=(
    "mmengine==0.10.7" "mmdet==3.3.0" "pycocotools==2.0.11" "numpy>=2.4.5,<3"
    "opencv-python>=4.8" "pillow>=10" "matplotlib>=3.8" "pyyaml>=6.0,<7" "pandas>=2.2,<4"
    "jsonschema>=4" "pytest>=8"
    # mmcv 2.1.0's own requirements and its build (no build isolation)
    "addict" "packaging" "yapf" "setuptools<81" "wheel" "ninja"
)
echo "make_gpu_wheels: binary wheels for Python $PYVER on $PLATFORM -> $DIR"
"$PYTHON" -m pip download --dest "$DIR" --only-binary=:all: \
    --python-version "$PYVER" --implementation cp --platform "$PLATFORM" \
    --platform manylinux2014_x86_64 --platform any "${REQS[@]}"
echo "make_gpu_wheels: mmcv 2.1.0 source release -> $DIR"
# pip reads the sdist's metadata by running its setup.py, which imports
# pkg_resources (gone from setuptools >= 81): without build isolation, in
# this environment (the project's venv has setuptools<81; PYTHON=.venv/bin/python)
"$PYTHON" -m pip download --dest "$DIR" --no-binary=:all: --no-deps --no-build-isolation \
    "mmcv==2.1.0"
ls "$DIR" > "$DIR/MANIFEST.txt"
echo "make_gpu_wheels: $(wc -l < "$DIR/MANIFEST.txt") files, $(du -sh "$DIR" | cut -f1) in $DIR"
