#!/usr/bin/env bash
# One-shot GPU check of oidseg (issues 11 and 19): on a bare machine with an
# NVIDIA GPU, a preinstalled CUDA torch (any version) and NO internet, within
# about 10 minutes in all (GPU_CHECK_BUDGET seconds, default 600).
#
#   bench/gpu_check.sh KIT_DIR [OUT_DIR]
#     KIT_DIR    made elsewhere by bench/make_gpu_wheels.sh KIT_DIR PYTHON_VERSION
#                (about 8 MB: mmengine, mmdet, pycocotools, shapely, small
#                pure-Python packages, setuptools<81, the mmcv 2.1.0 source;
#                only what the machine lacks, installed with --no-deps)
#     OUT_DIR    results (default ./gpu_check_results): gpu_check_table.md
#                (the table), gpu_check.log, one log per part, JSON figures
#   PYTHON=...   the interpreter that has the CUDA torch (default python3)
#
# Steps: a virtual environment on top of that interpreter (its packages
# visible); the kit installed offline; mmcv 2.1.0 with its CUDA ops through
# ci/mmcv_build.py (the installer's own build: a wheel in
# KIT_DIR/mmcv-cache/<torch, CUDA, arch> is reused when it matches this
# machine's Python, torch and CUDA, else it is built for the card's one
# architecture with MAX_JOBS = all cores); then the parts, most valuable
# first, each isolated with its own time limit, cut to what is left of the
# budget (a part that no longer fits is reported as not run):
#   tests      pytest -m gpu tests/test_gpu.py (ensemble GPU == CPU on the demo
#              models; a demo stage trains on the GPU, fp32 and --amp; the
#              torchrun path with one GPU)
#   infer / infer-amp   bench/bench_full_size.py: images/s and peak GPU memory
#              of the full-size leaf ensemble (12 runs) and of P1 (4 runs),
#              inference.amp off, then on
#   train-fp32 / train-amp   iterations/s and peak GPU memory of each
#              full-size model (L1, L2, L3, P1; 1 image/iteration)
# and prints one table (OUT_DIR/gpu_check_table.md) with the GPU-hours
# extrapolated to the 99,999-image test set next to the original's ~525
# T4-hours. Exit status: 0 all parts passed, 1 a part failed or did not
# run, 3 no CUDA device (stops before the mmcv CUDA build).
set -uo pipefail

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
    sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WHEELS=$(cd "$1" 2>/dev/null && pwd) || { echo "gpu_check: kit folder $1 is missing" >&2; exit 2; }
OUT=${2:-$PWD/gpu_check_results}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PYTHON=${PYTHON:-python3}
VENV=${GPU_CHECK_VENV:-$OUT/venv}
CORES=$(nproc)
BUDGET=${GPU_CHECK_BUDGET:-600}
PARTS=(tests infer infer-amp train-fp32 train-amp)
T0=$SECONDS
STATUS=$OUT/status.tsv
: > "$STATUS"
: > "$OUT/gpu_check.log"

log() { echo "[gpu_check +$((SECONDS - T0))s] $*" | tee -a "$OUT/gpu_check.log" >&2; }
die() { log "STOP: $*"; exit "${2:-1}"; }

# part NAME TIMEOUT_S CMD...: run CMD with a timeout (cut to what is left of
# the budget), its output in OUT/NAME.log
part() {
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    local left=$((BUDGET - (SECONDS - T0) - 15))
    if [[ $left -lt 30 ]]; then
        printf '%s\t-\t0\t%s\n' "$name" "not run: the ${BUDGET}s budget was spent" >> "$STATUS"
        log "part $name: not run (the ${BUDGET}s budget was spent)"
        return 0
    fi
    [[ $left -lt $limit ]] && limit=$left
    log "part $name (limit ${limit}s): $*"
    timeout --kill-after=15 "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    local note="ok"
    if [[ $rc == 124 || $rc == 137 ]]; then note="TIMEOUT after ${limit}s"
    elif [[ $rc != 0 ]]; then note="FAILED (exit $rc)"; fi
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$note" >> "$STATUS"
    log "part $name: $note in $((SECONDS - start))s (log: $OUT/$name.log)"
    tail -n 4 "$OUT/$name.log" | sed 's/^/    /' >&2
    return 0
}

# ---------------------------------------------------------------- 0. torch
log "repo $REPO, kit $WHEELS, out $OUT, $CORES cores, budget ${BUDGET}s"
"$PYTHON" - <<'EOF' 2>&1 | tee -a "$OUT/gpu_check.log" >&2 || die "$PYTHON cannot import torch: set PYTHON= to the interpreter with the CUDA torch" 2
import platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, built for CUDA {torch.version.cuda}, "
      f"cuda available: {torch.cuda.is_available()}, devices: {torch.cuda.device_count()}")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"  cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}")
EOF
ls "$WHEELS"/mmcv-2.1.0.tar.gz > /dev/null 2>&1 || die "$WHEELS has no mmcv-2.1.0.tar.gz (bench/make_gpu_wheels.sh)" 2

# ---------------------------------------------------------------- 1. venv
if [[ ! -x $VENV/bin/python ]]; then
    log "virtual environment $VENV on top of $PYTHON (its torch stays visible)"
    "$PYTHON" -m venv --system-site-packages "$VENV" || die "cannot create $VENV" 2
    # an interpreter that is itself a venv: its packages (torch) through a .pth file
    parent_site=$("$PYTHON" -c 'import sys, sysconfig; print(sysconfig.get_paths()["purelib"] if sys.prefix != sys.base_prefix else "")')
    if [[ -n $parent_site ]]; then
        venv_site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
        echo "$parent_site" > "$venv_site/_gpu_check_parent.pth"
    fi
fi
PY=$VENV/bin/python
"$PY" -c 'import torch' 2>/dev/null || die "torch is not visible in $VENV" 2

# ---------------------------------------------------------------- 2. kit
log "installing the kit from $WHEELS (offline, --no-deps: beside the machine's own packages)"
"$PY" -m pip install -q --no-index --no-deps --find-links "$WHEELS" "$WHEELS"/*.whl 2>&1 | tail -n 5 \
    | tee -a "$OUT/gpu_check.log" >&2
"$PY" -c 'import mmengine, mmdet, pycocotools, cv2, shapely' 2>>"$OUT/gpu_check.log" \
    || die "the kit did not install (see $OUT/gpu_check.log)" 2
log "mmengine $("$PY" -c 'import mmengine; print(mmengine.__version__)'), mmdet $("$PY" -c 'import mmdet; print(mmdet.__version__)')"

# ---------------------------------------------------------------- 3. CUDA
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    log "NO CUDA DEVICE: torch.cuda.is_available() is False (torch $("$PY" -c 'import torch; print(torch.__version__)'))."
    log "Everything from here on needs a GPU: the mmcv 2.1.0 build with CUDA ops, the GPU tests,"
    log "the ensemble throughput and the full-size training (fp32, AMP). Nothing was measured."
    for name in mmcv-build "${PARTS[@]}"; do
        printf '%s\t-\t0\t%s\n' "$name" "not run: no CUDA device" >> "$STATUS"
    done
    "$PY" "$REPO/bench/gpu_check_table.py" "$OUT" > "$OUT/gpu_check_table.md"
    log "table of what did not run: $OUT/gpu_check_table.md"
    exit 3
fi

# ---------------------------------------------------------------- 4. mmcv
mmcv_ok() {
    "$PY" - <<'PYEOF' 2>>"$OUT/gpu_check.log"
import torch, mmcv
from mmcv.ops import nms, RoIAlign
assert mmcv.__version__ == "2.1.0", mmcv.__version__
boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10]], dtype=torch.float32, device="cuda")
nms(boxes, torch.tensor([0.9, 0.8], device="cuda"), 0.5)  # needs the CUDA ops
RoIAlign(7, 1.0, 0)(torch.rand(1, 4, 16, 16, device="cuda"),
                    torch.tensor([[0, 0, 0, 8, 8]], dtype=torch.float32, device="cuda"))
print("mmcv", mmcv.__version__, "with CUDA ops")
PYEOF
}
start=$SECONDS
if mmcv_ok; then
    note="present"
else
    ARCH=$("$PY" -c 'import torch; print(";".join(sorted({"%d.%d" % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})))')
    log "mmcv 2.1.0 with CUDA ops for $ARCH: a matching wheel from $WHEELS/mmcv-cache, else a build (MAX_JOBS=$CORES, a few minutes)"
    WHEEL=$(MAX_JOBS=$CORES MMCV_WHEEL_CACHE="$WHEELS/mmcv-cache" PIP_NO_INDEX=1 PIP_FIND_LINKS="$WHEELS" \
        timeout 1200 "$PY" "$REPO/ci/mmcv_build.py" wheel --mode cuda --arch-list "$ARCH" \
        --sdist "$WHEELS/mmcv-2.1.0.tar.gz" 2> "$OUT/mmcv-build.log") \
        || { tail -n 30 "$OUT/mmcv-build.log" >&2; die "the mmcv build failed (see $OUT/mmcv-build.log)"; }
    "$PY" -m pip install -q --no-index --no-deps --force-reinstall "$WHEEL" >> "$OUT/gpu_check.log" 2>&1
    mmcv_ok || die "mmcv 2.1.0 has no working CUDA ops after the build (see $OUT/gpu_check.log)"
    note="$(grep -q reusing "$OUT/mmcv-build.log" && echo "prebuilt wheel reused" || echo "built") in $((SECONDS - start))s (arch $ARCH)"
fi
printf 'mmcv-build\t0\t%s\t%s\n' "$((SECONDS - start))" "$note" >> "$STATUS"
log "mmcv: $note"

# ---------------------------------------------------------------- 5. parts
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
cd "$REPO" || exit 2
BENCH=(env PYTHONDONTWRITEBYTECODE=1 "$PY" "$REPO/bench/bench_full_size.py" --device cuda --threads 0
       --part-timeout 150)
TRAIN=(--parts train-L1 train-L2 train-L3 train-P1 --train-iters 10 --warmup-iters 3)
INFER=(--parts infer-leaf infer-P1 --infer-images 5)
part tests 150 env PYTHONDONTWRITEBYTECODE=1 "$PY" -m pytest -q -ra -m gpu -p no:cacheprovider \
    "$REPO/tests/test_gpu.py"
part infer 120 "${BENCH[@]}" "${INFER[@]}" --json-out "$OUT/infer.json"
part infer-amp 100 "${BENCH[@]}" "${INFER[@]}" --amp --json-out "$OUT/infer-amp.json"
part train-fp32 150 "${BENCH[@]}" "${TRAIN[@]}" --json-out "$OUT/train-fp32.json"
part train-amp 120 "${BENCH[@]}" "${TRAIN[@]}" --amp --json-out "$OUT/train-amp.json"

# ---------------------------------------------------------------- 6. table
"$PY" "$REPO/bench/gpu_check_table.py" "$OUT" | tee "$OUT/gpu_check_table.md"
log "total $((SECONDS - T0))s; table: $OUT/gpu_check_table.md"
if awk -F'\t' '$2 != "0" {bad = 1} END {exit !bad}' "$STATUS"; then exit 1; fi
exit 0
