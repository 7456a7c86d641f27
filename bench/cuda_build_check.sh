#!/usr/bin/env bash
# Proof, on a machine WITHOUT a GPU and without a system CUDA toolkit, that the
# installer's CUDA path (ci/install.sh CUDA=1) builds mmcv 2.1.0 with working
# CUDA kernels. Run by hand (45+ minutes per architecture on 2 cores).
#
#   bench/cuda_build_check.sh [TORCH_VERSION]        (default 2.13.0)
#
# Environment: TORCH_CUDA_ARCH_LIST (the installer's default 7.5;8.0;8.6;8.9;9.0+PTX),
# MAX_JOBS (all cores), CHECK_DIR (/tmp/oidseg-cuda-check): the scratch venv
# venv-torch<V>, the kept build tree, the report; MMCV_WHEEL_CACHE
# ($CHECK_DIR/wheels): the built wheel, in a folder per (torch, CUDA, arch
# list, patches) that PIP_FIND_LINKS can name (a second run reuses it and
# only re-checks).
#
# 1. The install (CUDA=1) in a scratch venv. As root, in a mount namespace
#    where /usr/local/cuda* and /usr/local/bin/nvcc are hidden (empty), so that
#    a system toolkit this machine happens to carry cannot be used.
# 2. The checks:
#    - the compile commands and every header the build read (ninja's deps)
#      come from the assembled CUDA_HOME, none from /usr/local/cuda;
#    - NVIDIA's cuobjdump (its PyPI wheel) lists, in mmcv/_ext*.so, a cubin
#      for every requested architecture and PTX for every "+PTX" one;
#    - `import mmcv.ops` works with no GPU, and the CPU ops pass
#      bench/mmcv_ops_check.py (nms, RoIAlign, DeformConv2d, ModulatedDeformConv2d);
# 3. A report (also $CHECK_DIR/report-torch<V>.txt): torch and CUDA versions,
#    arch list, build time, wheel size, cubins and PTX found.
# Exit 0 when every check passed, 1 otherwise.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TORCH_VERSION=${1:-2.13.0}
CHECK_DIR=${CHECK_DIR:-/tmp/oidseg-cuda-check}
mkdir -p "$CHECK_DIR"
CHECK_DIR=$(cd "$CHECK_DIR" && pwd)
VENV=$CHECK_DIR/venv-torch$TORCH_VERSION
TREE=$CHECK_DIR/build-torch$TORCH_VERSION
export MMCV_WHEEL_CACHE=${MMCV_WHEEL_CACHE:-$CHECK_DIR/wheels}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$(python3 -c "import sys; sys.path.insert(0, '$REPO/ci'); import mmcv_build; print(mmcv_build.DEFAULT_ARCH_LIST)")}
REPORT=$CHECK_DIR/report-torch$TORCH_VERSION.txt
FAILED=0
T0=$SECONDS
: > "$REPORT"

say() { echo "[cuda_build_check] $*" | tee -a "$REPORT"; }
bad() { say "FAIL: $*"; FAILED=1; }

say "torch $TORCH_VERSION, TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST, MAX_JOBS=${MAX_JOBS:-$(nproc)}, $(nproc) cores, $CHECK_DIR"
if command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1; then
    say "note: this machine has a GPU; the check is meant for one without"
fi

# ------------------------------------------------------------ 1. install
# A scratch environment: the machine's pip constraints (a torch cap here)
# do not apply to it unless KEEP_PIP_CONSTRAINTS=1.
if [[ ${KEEP_PIP_CONSTRAINTS:-0} != 1 ]]; then export PIP_CONSTRAINT=/dev/null; fi
# a fresh build keeps its tree in $TREE (for the header check below); a rerun
# that finds the wheel in the cache keeps the tree of the build that made it
if ! ls "$MMCV_WHEEL_CACHE"/torch"${TORCH_VERSION}"*/mmcv-2.1.0-*.whl > /dev/null 2>&1; then rm -rf "$TREE"; fi
INSTALL=(env CUDA=1 VENV="$VENV" TORCH_VERSION="$TORCH_VERSION" MMCV_KEEP_BUILD="$TREE"
         HEARTBEAT_SECONDS=300 bash "$REPO/ci/install.sh")
HIDDEN=()
for d in /usr/local/cuda*; do [[ -d $d && ! -L $d ]] && HIDDEN+=("$d"); done
start=$SECONDS
cd "$REPO" || exit 2
if [[ $(id -u) == 0 ]] && unshare -m true 2> /dev/null; then
    say "system CUDA hidden during the install: ${HIDDEN[*]:-none present} /usr/local/bin/nvcc"
    # shellcheck disable=SC2016
    unshare -m bash -c '
        for d in "$@"; do mount -t tmpfs -o ro,size=4k none "$d" || exit 97; done
        if [ -e /usr/local/bin/nvcc ]; then mount --bind /dev/null /usr/local/bin/nvcc || exit 97; fi
        exec '"$(printf '%q ' "${INSTALL[@]}")" _ "${HIDDEN[@]}" 2>&1 | tee "$CHECK_DIR/install-torch$TORCH_VERSION.log"
else
    say "not root or no mount namespaces: the system CUDA is not hidden; the header check below still tells"
    "${INSTALL[@]}" 2>&1 | tee "$CHECK_DIR/install-torch$TORCH_VERSION.log"
fi
rc=${PIPESTATUS[0]}
install_s=$((SECONDS - start))
if [[ $rc != 0 ]]; then
    bad "the install exited $rc after ${install_s}s (log: $CHECK_DIR/install-torch$TORCH_VERSION.log)"
    exit 1
fi
PY=$VENV/bin/python
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
EXT=$(ls "$SITE"/mmcv/_ext*.so 2> /dev/null | head -n 1)
# the wheel the installer built or reused (its line "  wheel: PATH ...")
WHEEL=$(sed -n 's/^  wheel: \([^ ]*\.whl\).*/\1/p' "$CHECK_DIR/install-torch$TORCH_VERSION.log" | tail -n 1)
INFO=$(dirname "$WHEEL")/build-info.json
say "install: ${install_s}s in all; $("$PY" -c 'import torch; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}")')"
"$PY" - "$INFO" "$WHEEL" << 'EOF' | tee -a "$REPORT"
import json, os, sys
info = json.load(open(sys.argv[1]))
print(f"[cuda_build_check] mmcv build: {info['build_seconds'] // 60} min {info['build_seconds'] % 60} s with MAX_JOBS={info['max_jobs']}, "
      f"arch list {info['arch_list']}, patches {info['patches'] or 'none'}")
print(f"[cuda_build_check] wheel: {sys.argv[2]} ({os.path.getsize(sys.argv[2]) / 2**20:.1f} MiB)")
EOF

# ------------------------------------------------------------ 2a. headers
NINJA_DIR=$(dirname "$(find "$TREE" -name build.ninja -print -quit 2> /dev/null)")
if [[ -n $NINJA_DIR && -f $NINJA_DIR/build.ninja ]]; then
    CUDA_REAL=$(readlink -f "$SITE/nvidia")
    "$VENV/bin/ninja" -C "$NINJA_DIR" -t deps 2> /dev/null | awk '/^    /{print $1}' | sort -u > "$CHECK_DIR/headers-torch$TORCH_VERSION.txt"
    n_all=$(wc -l < "$CHECK_DIR/headers-torch$TORCH_VERSION.txt")
    n_cuda=$(xargs -r readlink -f < "$CHECK_DIR/headers-torch$TORCH_VERSION.txt" | grep -c "^$CUDA_REAL/" || true)
    n_sys=$(grep -c "^/usr/local/cuda" "$CHECK_DIR/headers-torch$TORCH_VERSION.txt" || true)
    n_cmd_sys=$(grep -c "/usr/local/cuda" "$NINJA_DIR/build.ninja" || true)
    say "headers read by the build: $n_all, of which $n_cuda from the NVIDIA wheels ($CUDA_REAL), $n_sys from /usr/local/cuda; build.ninja names /usr/local/cuda $n_cmd_sys times"
    [[ $n_cuda -gt 0 ]] || bad "no header came from the NVIDIA wheels"
    [[ $n_sys == 0 && $n_cmd_sys == 0 ]] || bad "the build used the system CUDA"
    grep -m1 -o "nvcc = [^ ]*" "$NINJA_DIR/build.ninja" | sed 's/^/[cuda_build_check] /' | tee -a "$REPORT"
else
    say "no build tree (the wheel came from $MMCV_WHEEL_CACHE): header check skipped"
fi

# ------------------------------------------------------------ 2b. cubins
CUDA_VER=$("$PY" -c 'import torch; print(torch.version.cuda)')
MAJOR=${CUDA_VER%%.*}
OBJDUMP=$SITE/nvidia/cu$MAJOR/bin/cuobjdump
if [[ ! -x $OBJDUMP ]]; then
    # the wheel of torch's CUDA minor version where it exists, else the newest of that major
    "$PY" -m pip install -q "nvidia-cuda-cuobjdump==$CUDA_VER.*" 2> /dev/null \
        || "$PY" -m pip install -q "nvidia-cuda-cuobjdump>=$MAJOR,<$((MAJOR + 1))" \
        || bad "cannot install NVIDIA's cuobjdump wheel"
fi
if [[ -x $OBJDUMP ]]; then
    LISTING=$CHECK_DIR/cuobjdump-torch$TORCH_VERSION.txt
    "$OBJDUMP" --list-elf --list-ptx "$EXT" > "$LISTING" 2>&1
    say "$("$OBJDUMP" --version | tail -n 1) on $(basename "$EXT") ($(du -h "$EXT" | cut -f1)):"
    "$PY" - "$LISTING" "$TORCH_CUDA_ARCH_LIST" << 'EOF' | tee -a "$REPORT"
import collections, re, sys
text = open(sys.argv[1]).read()
elf = collections.Counter(re.findall(r"ELF file\s+\d+:\s+\S*?\.(sm_\d+[af]?)\.cubin", text))
ptx = collections.Counter(re.findall(r"PTX file\s+\d+:\s+\S*?\.(sm_\d+[af]?)\.ptx", text))
ok = True
for item in re.split(r"[;\s,]+", sys.argv[2].strip()):
    arch, want_ptx = item.replace("+PTX", ""), item.endswith("+PTX")
    sm = "sm_" + arch.replace(".", "")
    line = f"  {arch}: {elf[sm]} cubins ({sm})"
    if elf[sm] == 0:
        ok = False
        line += "  MISSING"
    if want_ptx:
        line += f", {ptx[sm]} PTX"
        if ptx[sm] == 0:
            ok = False
            line += "  MISSING"
    print("[cuda_build_check] " + line)
print(f"[cuda_build_check]   in all: cubins {dict(sorted(elf.items()))}, PTX {dict(sorted(ptx.items()))}")
sys.exit(0 if ok else 1)
EOF
    [[ ${PIPESTATUS[0]} == 0 ]] || bad "device code missing for a requested architecture (see $LISTING)"
fi

# ------------------------------------------------------------ 2c. import + CPU ops
"$PY" "$REPO/bench/mmcv_ops_check.py" 2>&1 | sed 's/^/[cuda_build_check] /' | tee -a "$REPORT"
[[ ${PIPESTATUS[0]} == 0 ]] || bad "mmcv ops check"

say "wheel folder for PIP_FIND_LINKS: $(dirname "$WHEEL")"
say "total $((SECONDS - T0))s; $([[ $FAILED == 0 ]] && echo 'ALL CHECKS PASSED' || echo 'SOME CHECKS FAILED')"
exit $FAILED
