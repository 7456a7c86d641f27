#!/usr/bin/env bash
# One-shot GPU check of oidseg (issue 11): on a bare machine with NVIDIA
# GPU(s), a preinstalled CUDA torch (any version) and NO internet.
#
#   bench/gpu_check.sh WHEEL_DIR [OUT_DIR]
#     WHEEL_DIR  made elsewhere by bench/make_gpu_wheels.sh DIR PYTHON_VERSION
#                (the pure-Python and binary wheels of mmengine, mmdet and
#                their dependencies for this machine's Python, and the mmcv
#                2.1.0 source release)
#     OUT_DIR    results (default ./gpu_check_results): gpu_check_table.md
#                (the table), gpu_check.log, one log per part, JSON figures
#   PYTHON=...   the interpreter that has the CUDA torch (default python3)
#
# Steps: a virtual environment on top of that interpreter (its torch
# visible); the wheels installed offline; mmcv 2.1.0 built with its CUDA ops
# (MAX_JOBS = cores, TORCH_CUDA_ARCH_LIST = the card's compute capability;
# the built wheel is kept in OUT_DIR/mmcv-wheel-torch<version> and reused);
# then, each part isolated (a failure or timeout is reported and the next
# part runs):
#   tests      pytest -m gpu tests/test_gpu.py (ensemble GPU == CPU on the demo
#              models; a demo stage trains on the GPU, fp32 and --amp; the
#              torchrun path with one GPU)
#   train-fp32 / train-amp   bench/bench_full_size.py: iterations/s and peak GPU
#              memory of each full-size model (L1, L2, L3, P1; 1 image/iteration)
#   infer      images/s of the full-size leaf ensemble (12 runs) and of P1 (4 runs)
# and prints one table (written to OUT_DIR/gpu_check_table.md) with the
# GPU-hours extrapolated to the 99,999-image test set next to the original's
# ~525 T4-hours. About 8 minutes on one H200 after the mmcv build (several
# minutes on 16 cores, once). Exit status: 0 all parts passed, 1 a part
# failed, 3 no CUDA device (stops before the mmcv CUDA build).
set -uo pipefail

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
    sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WHEELS=$(cd "$1" 2>/dev/null && pwd) || { echo "gpu_check: wheel folder $1 is missing" >&2; exit 2; }
OUT=${2:-$PWD/gpu_check_results}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PYTHON=${PYTHON:-python3}
VENV=${GPU_CHECK_VENV:-$OUT/venv}
CORES=$(nproc)
T0=$SECONDS
STATUS=$OUT/status.tsv
: > "$STATUS"
: > "$OUT/gpu_check.log"

log() { echo "[gpu_check +$((SECONDS - T0))s] $*" | tee -a "$OUT/gpu_check.log" >&2; }
die() { log "STOP: $*"; exit "${2:-1}"; }

# part NAME TIMEOUT_S CMD...: run CMD with a timeout, its output in OUT/NAME.log
part() {
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
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
log "repo $REPO, wheels $WHEELS, out $OUT, $CORES cores"
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

# ---------------------------------------------------------------- 2. wheels
log "installing from $WHEELS (offline)"
"$PY" -m pip install -q --no-index --find-links "$WHEELS" \
    "mmengine==0.10.7" "mmdet==3.3.0" "pycocotools==2.0.11" "numpy>=2" opencv-python pillow \
    matplotlib pyyaml pytest "setuptools<81" wheel ninja addict packaging yapf scipy shapely \
    terminaltables 2>&1 | tail -n 5 | tee -a "$OUT/gpu_check.log" >&2
"$PY" -c 'import mmengine, mmdet, pycocotools, cv2' 2>>"$OUT/gpu_check.log" \
    || die "the wheels did not install (see $OUT/gpu_check.log)" 2
log "mmengine $("$PY" -c 'import mmengine; print(mmengine.__version__)'), mmdet $("$PY" -c 'import mmdet; print(mmdet.__version__)')"

# ---------------------------------------------------------------- 3. CUDA
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    log "NO CUDA DEVICE: torch.cuda.is_available() is False (torch $("$PY" -c 'import torch; print(torch.__version__)'))."
    log "Everything from here on needs a GPU: the mmcv 2.1.0 build with CUDA ops, the GPU tests,"
    log "the full-size training (fp32, AMP) and ensemble throughput. Nothing was measured."
    for name in mmcv-build tests train-fp32 train-amp infer; do
        printf '%s\t-\t0\t%s\n' "$name" "not run: no CUDA device" >> "$STATUS"
    done
    "$PY" "$REPO/bench/gpu_check_table.py" "$OUT" > "$OUT/gpu_check_table.md"
    log "table of what did not run: $OUT/gpu_check_table.md"
    exit 3
fi

# ---------------------------------------------------------------- 4. mmcv
mmcv_ok() {
    "$PY" - <<'EOF' 2>>"$OUT/gpu_check.log"
import torch, mmcv
from mmcv.ops import nms, RoIAlign
assert mmcv.__version__ == "2.1.0", mmcv.__version__
boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10]], dtype=torch.float32, device="cuda")
nms(boxes, torch.tensor([0.9, 0.8], device="cuda"), 0.5)  # needs the CUDA ops
RoIAlign(7, 1.0, 0)(torch.rand(1, 4, 16, 16, device="cuda"),
                    torch.tensor([[0, 0, 0, 8, 8]], dtype=torch.float32, device="cuda"))
print("mmcv", mmcv.__version__, "with CUDA ops")
EOF
}
start=$SECONDS
if mmcv_ok; then
    note="present"
else
    TORCH_VER=$("$PY" -c 'import torch; print(torch.__version__.replace("+", "_"))')
    ARCH=$("$PY" -c 'import torch; print(";".join(sorted({"%d.%d" % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})))')
    CACHE=$OUT/mmcv-wheel-torch$TORCH_VER
    mkdir -p "$CACHE"
    if ! ls "$CACHE"/mmcv-2.1.0-*.whl > /dev/null 2>&1; then
        "$PY" - <<'EOF' || log "WARNING: torch >= 2.14 needs C++20; mmcv 2.1.0's setup.py forces -std=c++17 (README, GPU)"
import sys, torch
v = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
sys.exit(1 if v >= (2, 14) else 0)
EOF
        log "building mmcv 2.1.0 with CUDA ops: MAX_JOBS=$CORES TORCH_CUDA_ARCH_LIST=$ARCH (several minutes)"
        MMCV_WITH_OPS=1 FORCE_CUDA=1 MAX_JOBS=$CORES TORCH_CUDA_ARCH_LIST=$ARCH \
            timeout 1800 "$PY" -m pip wheel --no-index --find-links "$WHEELS" --no-deps \
            --no-build-isolation -w "$CACHE" "$WHEELS/mmcv-2.1.0.tar.gz" > "$OUT/mmcv-build.log" 2>&1 \
            || { tail -n 30 "$OUT/mmcv-build.log" >&2; die "the mmcv build failed (see $OUT/mmcv-build.log)"; }
    fi
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" --force-reinstall --no-deps \
        "$CACHE"/mmcv-2.1.0-*.whl >> "$OUT/gpu_check.log" 2>&1
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" "$CACHE"/mmcv-2.1.0-*.whl \
        >> "$OUT/gpu_check.log" 2>&1
    mmcv_ok || die "mmcv 2.1.0 has no working CUDA ops after the build (see $OUT/gpu_check.log)"
    note="built in $((SECONDS - start))s (arch $ARCH)"
fi
printf 'mmcv-build\t0\t%s\t%s\n' "$((SECONDS - start))" "$note" >> "$STATUS"
log "mmcv: $note"

# ---------------------------------------------------------------- 5. parts
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
cd "$REPO" || exit 2
BENCH=(env PYTHONDONTWRITEBYTECODE=1 "$PY" "$REPO/bench/bench_full_size.py" --device cuda --threads 0
       --part-timeout 200)
TRAIN=(--parts train-L1 train-L2 train-L3 train-P1 --train-iters 10 --warmup-iters 3)
part tests 300 env PYTHONDONTWRITEBYTECODE=1 "$PY" -m pytest -q -ra -m gpu -p no:cacheprovider \
    "$REPO/tests/test_gpu.py"
part train-fp32 240 "${BENCH[@]}" "${TRAIN[@]}" --json-out "$OUT/train-fp32.json"
part train-amp 240 "${BENCH[@]}" "${TRAIN[@]}" --amp --json-out "$OUT/train-amp.json"
part infer 240 "${BENCH[@]}" --parts infer-leaf infer-P1 --infer-images 5 --json-out "$OUT/infer.json"

# ---------------------------------------------------------------- 6. table
"$PY" "$REPO/bench/gpu_check_table.py" "$OUT" | tee "$OUT/gpu_check_table.md"
log "total $((SECONDS - T0))s; table: $OUT/gpu_check_table.md"
if awk -F'\t' '$2 != "0" {bad = 1} END {exit !bad}' "$STATUS"; then exit 1; fi
exit 0
