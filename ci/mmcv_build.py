"""The parts of the install (ci/install.sh) that decide and assemble, kept in
one stdlib-only module so that a fast test covers them (tests/test_install.py):

    mode            CUDA=auto|0|1 -> "cuda" or "cpu" (auto: an NVIDIA driver is visible)
    find-links      PIP_FIND_LINKS without the folders that hold a CPU torch wheel
                    (for the CUDA torch install: such a wheel would win over PyPI's)
    nvcc-requirement  after torch: the NVIDIA compiler + header wheels of the CUDA
                    version torch pinned (cuda-toolkit[nvcc,cccl]==<torch's pin>)
    cuda-home DEST  a CUDA_HOME of links into site-packages/nvidia/cu<N> (bin,
                    include, nvvm) plus lib64/ with unversioned links
    arch-list LIST  check TORCH_CUDA_ARCH_LIST against what this nvcc can target
    patches         the patch files of ci/patches/mmcv-2.1.0 that apply to this torch
    wheel           build (or reuse) the mmcv 2.1.0 wheel for this (torch, CUDA,
                    arch list, patches) in a cache folder that PIP_FIND_LINKS can name

Every failure is one line "mmcv_build: ..." on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

MMCV_VERSION = "2.1.0"
PATCH_DIR = Path(__file__).resolve().parent / "patches" / f"mmcv-{MMCV_VERSION}"
# Turing (T4, RTX 20xx) .. Hopper (H100/H200), with PTX for newer cards
DEFAULT_ARCH_LIST = "7.5;8.0;8.6;8.9;9.0+PTX"
ARCH_RE = re.compile(r"^(\d+)\.(\d+)([af]?)(\+PTX)?$")


class BuildError(Exception):
    """A problem the user must fix; printed as one line, exit 2."""


# ------------------------------------------------------------------- mode --
def nvidia_driver_visible() -> bool:
    """An NVIDIA driver on this machine: `nvidia-smi -L` lists a GPU, or the
    kernel module reports itself."""
    if Path("/proc/driver/nvidia/version").is_file():
        return True
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def resolve_mode(value: str) -> str:
    value = (value or "auto").strip().lower()
    if value in ("1", "yes", "true", "cuda"):
        return "cuda"
    if value in ("0", "no", "false", "cpu"):
        return "cpu"
    if value == "auto":
        return "cuda" if nvidia_driver_visible() else "cpu"
    raise BuildError(f"CUDA={value!r}: expected auto, 1 or 0")


# ------------------------------------------------------------- find-links --
def configured_find_links(env_value: str, python: str) -> list[str]:
    """PIP_FIND_LINKS plus the find-links of pip's configuration files (an
    environment variable replaces a configured value, so both count)."""
    entries = env_value.split()
    try:
        out = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             timeout=60, env={k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS"})
        lines = out.stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        lines = []
    for line in lines:
        key, _, value = line.partition("=")
        if key.endswith(".find-links"):
            entries += value.strip().strip("'\"").split()
    return list(dict.fromkeys(entries))


def find_links_without_cpu_torch(entries: list[str], empty_dir: Path) -> str:
    """The find-links entries minus the local folders that hold a
    `torch-*+cpu*` wheel (pip would prefer 2.13.0+cpu over PyPI's 2.13.0, the
    CUDA build). Never empty: an empty PIP_FIND_LINKS would let a configured
    value through, so an empty folder stands in."""
    kept = []
    for entry in entries:
        path = Path(entry[len("file://"):] if entry.startswith("file://") else entry)
        if path.is_dir() and any(path.glob("torch-*+cpu*.whl")):
            continue
        kept.append(entry)
    if not kept:
        empty_dir.mkdir(parents=True, exist_ok=True)
        kept = [str(empty_dir)]
    return " ".join(kept)


# ------------------------------------------------------------------ torch --
def torch_info() -> dict:
    """Version, CUDA version and the cuda-toolkit pin of the installed torch."""
    from importlib import metadata

    try:
        import torch
    except ImportError as exc:
        raise BuildError(f"torch is not importable ({exc}); install it first") from exc
    pin = None
    for req in metadata.requires("torch") or []:
        m = re.match(r"^cuda-toolkit(\[[^\]]*\])?\s*==\s*([0-9.]+)", req)
        if m:
            pin = m.group(2)
    return {"version": torch.__version__, "cuda": torch.version.cuda, "toolkit_pin": pin}


def nvcc_requirement(info: dict) -> str:
    """The pip requirement of nvcc, crt/ headers and cub/thrust for torch's CUDA."""
    if not info["cuda"]:
        raise BuildError(f"torch {info['version']} is a CPU build (torch.version.cuda is None): "
                         "CUDA=1 needs torch's CUDA build (ci/install.sh installs it from PyPI)")
    if info["toolkit_pin"]:
        return f"cuda-toolkit[nvcc,cccl]=={info['toolkit_pin']}"
    major, minor = info["cuda"].split(".")[:2]
    return f"cuda-toolkit[nvcc,cccl]=={major}.{minor}.*"


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version.split("+")[0])[:3])


# ------------------------------------------------------------- cuda home --
def nvidia_root(site_packages: Path, cuda_version: str) -> Path:
    """site-packages/nvidia/cu<major> (the CUDA 13 wheels' one-folder layout)."""
    major = cuda_version.split(".")[0]
    root = site_packages / "nvidia" / f"cu{major}"
    if not (root / "bin" / "nvcc").is_file():
        raise BuildError(f"{root}/bin/nvcc is missing: install {nvcc_requirement({'cuda': cuda_version, 'toolkit_pin': None, 'version': '?'})} first"
                         " (CUDA 12 wheels use another layout: point CUDA_HOME at a CUDA 12 toolkit instead)")
    return root


def assemble_cuda_home(root: Path, dest: Path) -> Path:
    """DEST/{bin,include,nvvm} -> ROOT/..., DEST/lib64/ with a link per
    library of ROOT/lib plus the unversioned `libX.so` the linker asks for
    (`-lcudart`). Rebuilt from scratch each time (idempotent)."""
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in ("bin", "include", "nvvm"):
        if (root / name).exists():
            (dest / name).symlink_to(root / name, target_is_directory=True)
    lib64 = dest / "lib64"
    lib64.mkdir()
    libdir = root / "lib"
    for lib in sorted(libdir.glob("*")) if libdir.is_dir() else []:
        (lib64 / lib.name).symlink_to(lib)
    for lib in sorted(lib64.glob("lib*.so.*")):
        unversioned = lib64 / (lib.name.split(".so")[0] + ".so")
        if not unversioned.exists():
            unversioned.symlink_to(lib.name)
    # CUDA 13 keeps cub/thrust under include/cccl (nvcc.profile adds it), 12 under include
    for need in ("bin/nvcc", "include/cuda_runtime.h", "include/crt/host_config.h",
                 "include/cccl/cub/cub.cuh|include/cub/cub.cuh", "lib64/libcudart.so"):
        if not any((dest / alt).exists() for alt in need.split("|")):
            raise BuildError(f"assembled CUDA_HOME {dest} lacks {need.replace('|', ' or ')} (from {root})")
    return dest


# ------------------------------------------------------------- arch list --
def parse_arch_list(text: str) -> list[tuple[str, bool]]:
    """'7.5;8.6 9.0+PTX' -> [('7.5', False), ('8.6', False), ('9.0', True)]."""
    items = [t for t in re.split(r"[;\s,]+", text.strip()) if t]
    if not items:
        raise BuildError("TORCH_CUDA_ARCH_LIST is empty: name compute capabilities, e.g. '8.0;9.0+PTX'")
    parsed = []
    for item in items:
        m = ARCH_RE.match(item)
        if not m:
            raise BuildError(f"TORCH_CUDA_ARCH_LIST: {item!r} is not a compute capability like 8.6 or 9.0+PTX")
        parsed.append((f"{m.group(1)}.{m.group(2)}{m.group(3)}", bool(m.group(4))))
    return parsed


def nvcc_archs(nvcc: Path) -> set[str]:
    """The real architectures nvcc can target, as 'sm_XX'."""
    out = subprocess.run([str(nvcc), "--list-gpu-code"], capture_output=True, text=True)
    if out.returncode != 0:
        raise BuildError(f"{nvcc} --list-gpu-code failed: {out.stderr.strip()[:200]}")
    return set(re.findall(r"\bsm_\d+[af]?\b", out.stdout))


def sm_name(arch: str) -> str:
    return "sm_" + arch.replace(".", "")


def check_arch_list(text: str, supported: set[str], cuda_version: str) -> str:
    """Normalised list (';'-joined) or a BuildError naming the card that
    this CUDA cannot target."""
    parsed = parse_arch_list(text)
    bad = [arch for arch, _ in parsed if sm_name(arch) not in supported]
    if bad:
        def key(sm: str) -> tuple[int, str]:
            digits = re.sub(r"\D", "", sm)
            return int(digits), sm
        plain = sorted((s for s in supported if not s[-1].isalpha()), key=key)
        hint = " (CUDA 13 dropped compute capability < 7.5, e.g. V100 7.0: use a CUDA 12 torch there)" \
            if cuda_version.startswith("13") and any(version_tuple(a) < (7, 5) for a in bad) else ""
        raise BuildError(
            f"TORCH_CUDA_ARCH_LIST: CUDA {cuda_version}'s nvcc cannot target {', '.join(bad)}; "
            f"it targets {plain[0]} to {plain[-1]}{hint}")
    return ";".join(a + ("+PTX" if ptx else "") for a, ptx in parsed)


# ---------------------------------------------------------------- patches --
def patch_condition(path: Path) -> str:
    """The `Applies-when: torch >= 2.14` line of a patch file's header."""
    for line in path.read_text().splitlines():
        if line.startswith("Applies-when:"):
            return line.split(":", 1)[1].strip()
        if line.startswith("---"):
            break
    raise BuildError(f"{path}: no 'Applies-when: torch >= X.Y' line in its header")


def patch_applies(condition: str, torch_version: str) -> bool:
    m = re.fullmatch(r"torch\s*(>=|<)\s*([0-9.]+)", condition)
    if not m:
        raise BuildError(f"patch condition {condition!r}: expected 'torch >= X.Y' or 'torch < X.Y'")
    have, bound = version_tuple(torch_version), version_tuple(m.group(2))
    return have >= bound if m.group(1) == ">=" else have < bound


def select_patches(torch_version: str, patch_dir: Path = PATCH_DIR) -> list[Path]:
    return [p for p in sorted(patch_dir.glob("*.patch")) if patch_applies(patch_condition(p), torch_version)]


# ------------------------------------------------------------------ wheel --
def cache_key(info: dict, mode: str, arch_list: str, patches: list[Path]) -> str:
    digest = hashlib.sha256()
    for p in patches:
        digest.update(p.name.encode() + b"\0" + p.read_bytes())
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    device = f"cuda{info['cuda']}-{arch_list.replace(';', '_').replace('+', '')}" if mode == "cuda" else "cpu"
    return f"torch{info['version'].replace('+', '_')}-{py}-{device}-patches{digest.hexdigest()[:8]}"


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "oidseg" / f"mmcv-{MMCV_VERSION}"


def fetch_sdist(dest: Path, python: str) -> Path:
    sdist = dest / f"mmcv-{MMCV_VERSION}.tar.gz"
    if not sdist.is_file():
        # pip runs the sdist's setup.py for its metadata: no build isolation,
        # so it sees this environment's torch and setuptools<81
        run([python, "-m", "pip", "download", "-q", "--no-binary=:all:", "--no-deps", "--no-build-isolation",
             "-d", str(dest), f"mmcv=={MMCV_VERSION}"], "downloading the mmcv source release")
    return sdist


def run(cmd: list[str], what: str, **kwargs) -> None:
    proc = subprocess.run(cmd, **kwargs)
    if proc.returncode != 0:
        raise BuildError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}")


def build_wheel(*, mode: str, arch_list: str, cache_root: Path, python: str, jobs: int,
                sdist: Path | None = None, keep_build: Path | None = None) -> Path:
    """The mmcv wheel for this torch: reused from CACHE_ROOT/<key>/ when there,
    else built from the source release with the selected patches."""
    info = torch_info()
    patches = select_patches(info["version"])
    folder = cache_root / cache_key(info, mode, arch_list, patches)
    existing = sorted(folder.glob(f"mmcv-{MMCV_VERSION}-*.whl"))
    if existing:
        log(f"reusing {existing[0]} (built earlier for this torch, CUDA, arch list and patch set)")
        return existing[0]
    folder.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mmcv-build-", dir=keep_build))
    sdist = sdist or fetch_sdist(folder, python)
    with tarfile.open(sdist) as tar:
        tar.extractall(work, filter="data")
    src = work / f"mmcv-{MMCV_VERSION}"
    for patch in patches:
        log(f"applying {patch.name}")
        run(["patch", "-p1", "--forward", "--batch", "-i", str(patch)], f"patch {patch.name}", cwd=src,
            stdout=subprocess.DEVNULL)
    env = dict(os.environ, MMCV_WITH_OPS="1", FORCE_CUDA="1" if mode == "cuda" else "0", MAX_JOBS=str(jobs))
    if mode == "cuda":
        env["TORCH_CUDA_ARCH_LIST"] = arch_list
    start = time.time()
    run([python, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(work / "dist"),
         str(src)], "building mmcv", env=env)
    wheel = next((work / "dist").glob(f"mmcv-{MMCV_VERSION}-*.whl"))
    target = folder / wheel.name
    shutil.move(str(wheel), str(target) + ".part")
    os.replace(str(target) + ".part", target)
    info_file = folder / "build-info.json"
    info_file.write_text(json.dumps({
        "mmcv": MMCV_VERSION, "torch": info["version"], "torch_cuda": info["cuda"], "mode": mode,
        "arch_list": arch_list if mode == "cuda" else None, "patches": [p.name for p in patches],
        "build_seconds": round(time.time() - start), "wheel_bytes": target.stat().st_size,
        "max_jobs": jobs, "cuda_home": env.get("CUDA_HOME"), "built": time.strftime("%Y-%m-%d %H:%M:%S"),
    }, indent=1) + "\n")
    if keep_build is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        log(f"build tree kept in {src}")
    return target


# -------------------------------------------------------------------- cli --
def log(msg: str) -> None:
    print(f"mmcv_build: {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("mode").add_argument("value", nargs="?", default=os.environ.get("CUDA", "auto"))
    links = sub.add_parser("find-links")
    links.add_argument("--empty-dir", required=True, help="stands in when no entry is left")
    sub.add_parser("nvcc-requirement")
    home = sub.add_parser("cuda-home")
    home.add_argument("dest")
    home.add_argument("--site-packages", default=None)
    arch = sub.add_parser("arch-list")
    arch.add_argument("value", nargs="?", default=os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_ARCH_LIST)
    arch.add_argument("--nvcc", required=True)
    pat = sub.add_parser("patches")
    pat.add_argument("--torch-version", default=None)
    whl = sub.add_parser("wheel")
    whl.add_argument("--mode", choices=("cpu", "cuda"), required=True)
    whl.add_argument("--arch-list", default="")
    whl.add_argument("--cache", default=os.environ.get("MMCV_WHEEL_CACHE") or str(default_cache_root()))
    whl.add_argument("--jobs", type=int, default=int(os.environ.get("MAX_JOBS") or os.cpu_count() or 1))
    whl.add_argument("--sdist", default=None, help="mmcv-2.1.0.tar.gz (default: downloaded)")
    whl.add_argument("--path-file", default=None, help="also write the wheel's path into this file")
    whl.add_argument("--keep-build", default=os.environ.get("MMCV_KEEP_BUILD") or None,
                     help="build in this folder and keep the tree (bench/cuda_build_check.sh reads its deps)")
    args = p.parse_args(argv)
    try:
        if args.cmd == "mode":
            print(resolve_mode(args.value))
        elif args.cmd == "find-links":
            entries = configured_find_links(os.environ.get("PIP_FIND_LINKS", ""), sys.executable)
            print(find_links_without_cpu_torch(entries, Path(args.empty_dir)))
        elif args.cmd == "nvcc-requirement":
            print(nvcc_requirement(torch_info()))
        elif args.cmd == "cuda-home":
            import sysconfig

            info = torch_info()
            site = Path(args.site_packages or sysconfig.get_paths()["purelib"])
            print(assemble_cuda_home(nvidia_root(site, info["cuda"] or ""), Path(args.dest).absolute()))
        elif args.cmd == "arch-list":
            info = torch_info()
            print(check_arch_list(args.value, nvcc_archs(Path(args.nvcc)), info["cuda"] or "?"))
        elif args.cmd == "patches":
            version = args.torch_version or torch_info()["version"]
            print("\n".join(str(p) for p in select_patches(version)))
        elif args.cmd == "wheel":
            keep = Path(args.keep_build).absolute() if args.keep_build else None
            if keep:
                keep.mkdir(parents=True, exist_ok=True)
            wheel = build_wheel(mode=args.mode, arch_list=args.arch_list, cache_root=Path(args.cache),
                                python=sys.executable, jobs=args.jobs,
                                sdist=Path(args.sdist) if args.sdist else None, keep_build=keep)
            if args.path_file:
                Path(args.path_file).write_text(f"{wheel}\n")
            print(wheel)
    except BuildError as exc:
        log(str(exc))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
