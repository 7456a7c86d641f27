#!/usr/bin/env bash
# The install behind `make demo` / `make test` (called by the Makefile when
# $VENV/.oidseg-installed is missing or older than pyproject.toml). It says
# what it does before each step, with the time it takes on 2 cores, and
# prints a line a minute during the long mmcv build, so that a quiet
# terminal never looks like a hang. Same pins and order as always:
#   venv, pip, torch 2.13.0, setuptools<81 + wheel + ninja,
#   mmcv 2.1.0 with its C++ ops (no build isolation), the package + test extras.
# Environment: PYTHON (python3), VENV (.venv), FORCE_CUDA (0), MAX_JOBS (2),
# PIP_FIND_LINKS (kept as it is; append a wheel folder, never replace it),
# HEARTBEAT_SECONDS (60).
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
PIP=("$PY" -m pip)
STEPS=6
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

echo "Setting up $VENV (first time only: about 15 minutes on 2 cores, most of it building mmcv;"
echo "about 2 minutes when pip already has the mmcv wheel). Every step is announced below."
if [ -n "${PIP_FIND_LINKS:-}" ]; then
  echo "pip find-links: $PIP_FIND_LINKS"
fi

step "creating the virtual environment $VENV" "a few seconds"
test -x "$PY" || "$PYTHON" -m venv "$VENV"

step "upgrading pip" "under a minute"
"${PIP[@]}" install -q --upgrade pip

step "installing torch 2.13.0 (CPU wheel where the machine has one)" "1-3 minutes to download, seconds when cached"
with_heartbeat "torch" "${PIP[@]}" install -q torch==2.13.0

step "installing the mmcv build tools (setuptools<81, wheel, ninja)" "under a minute"
"${PIP[@]}" install -q 'setuptools<81' wheel ninja

step "building mmcv 2.1.0 with its C++ ops against torch" \
  "about 11 minutes on 2 cores, once; pip caches the wheel, later installs take seconds"
with_heartbeat "mmcv build" env MMCV_WITH_OPS=1 FORCE_CUDA="${FORCE_CUDA:-0}" MAX_JOBS="${MAX_JOBS:-2}" \
  "${PIP[@]}" install -q --no-build-isolation mmcv==2.1.0

step "installing oidseg with mmdet, mmengine, snakemake and the test tools" "1-3 minutes"
with_heartbeat "oidseg and its dependencies" "${PIP[@]}" install -q -e '.[test]'

echo "[install] done in $(((SECONDS - started) / 60)) min $(((SECONDS - started) % 60)) s"
