"""Give each local GPU job its own GPU ids (``CUDA_VISIBLE_DEVICES``).

``snakemake --cores N --resources gpu=G`` only counts GPUs; it never says
which ones a job may use. This module hands out GPU ids with ``fcntl.flock``
locks, one lock file per id in a lock directory:

- the visible ids come from ``$OIDSEG_GPUS`` (comma-separated, may be fake
  ids for tests; empty means none), else from ``nvidia-smi -L``, else none;
- a job needing ``k`` GPUs claims ``k`` free ids at once (all or nothing,
  under a directory-wide allocation lock), waiting while too few are free;
- the claim lives as long as the lock file descriptors are open. The kernel
  drops a ``flock`` when the last process holding the descriptor exits, so a
  crash or ``SIGKILL`` frees the ids without any clean-up step.

Under SLURM (``$SLURM_JOB_ID`` set) or when ``CUDA_VISIBLE_DEVICES`` is
already set, the scheduler or the user has chosen the devices: GPU requests
pass through untouched. A job asking for 0 GPUs, or any job on a machine
without visible GPUs, gets ``CUDA_VISIBLE_DEVICES=""`` (CPU only); asking
for more GPUs than are visible (but some are) is an error.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

ENV_GPUS = "OIDSEG_GPUS"
ENV_LOCK_DIR = "OIDSEG_GPU_LOCK_DIR"
CUDA_ENV = "CUDA_VISIBLE_DEVICES"
_ALLOC_LOCK_NAME = ".alloc.lock"
_NVIDIA_SMI_GPU_LINE = re.compile(r"^GPU (\d+):", re.MULTILINE)


class GpuAllocationError(Exception):
    """A GPU request that can never be met (bad count, bad id list)."""


def default_lock_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$OIDSEG_GPU_LOCK_DIR``, else one directory per user in the temp dir.

    The default is machine-wide (not per workflow directory) because the GPUs
    are: two workflows run from different folders must not share a GPU.
    """
    env = os.environ if env is None else env
    if env.get(ENV_LOCK_DIR):
        return Path(env[ENV_LOCK_DIR])
    return Path(tempfile.gettempdir()) / f"oidseg-gpu-locks-{os.getuid()}"


def parse_gpu_ids(text: str, source: str) -> list[str]:
    """Split a comma-separated id list; empty text means no GPUs."""
    ids = [part.strip() for part in text.split(",")]
    if ids == [""]:
        return []
    bad = [gid for gid in ids if not gid or not re.fullmatch(r"[A-Za-z0-9_.:-]+", gid)]
    if bad:
        raise GpuAllocationError(f"{source}={text!r}: invalid GPU id(s) {bad}")
    if len(set(ids)) != len(ids):
        raise GpuAllocationError(f"{source}={text!r}: duplicate GPU ids")
    return ids


def nvidia_smi_gpu_ids(env: Mapping[str, str] | None = None) -> list[str]:
    """Indices of the physical GPUs listed by ``nvidia-smi -L`` (none if absent)."""
    env = os.environ if env is None else env
    exe = shutil.which("nvidia-smi", path=env.get("PATH", os.defpath))
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return _NVIDIA_SMI_GPU_LINE.findall(out)


def visible_gpu_ids(env: Mapping[str, str] | None = None) -> list[str]:
    """GPU ids this machine offers: ``$OIDSEG_GPUS``, else ``nvidia-smi -L``."""
    env = os.environ if env is None else env
    if ENV_GPUS in env:
        return parse_gpu_ids(env[ENV_GPUS], ENV_GPUS)
    return nvidia_smi_gpu_ids(env)


def pass_through_reason(env: Mapping[str, str] | None = None) -> str | None:
    """Why the allocator must not choose devices itself, or None."""
    env = os.environ if env is None else env
    if env.get("SLURM_JOB_ID"):
        return f"running under SLURM job {env['SLURM_JOB_ID']}"
    if CUDA_ENV in env:
        return f"{CUDA_ENV}={env[CUDA_ENV]!r} is already set"
    return None


@dataclass
class GpuLease:
    """GPU ids claimed by this process; the claim lasts while ``fds`` are open."""

    ids: list[str]
    fds: list[int] = field(default_factory=list)

    @property
    def cuda_visible_devices(self) -> str:
        return ",".join(self.ids)

    def make_inheritable(self) -> None:
        """Keep the locks held across ``exec`` and in child processes."""
        for fd in self.fds:
            os.set_inheritable(fd, True)

    def release(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []

    def __enter__(self) -> "GpuLease":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock_path(lock_dir: Path, gpu_id: str) -> Path:
    return lock_dir / f"gpu-{gpu_id}.lock"


@contextlib.contextmanager
def _allocation_lock(lock_dir: Path) -> Iterator[None]:
    fd = os.open(lock_dir / _ALLOC_LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def try_claim(count: int, ids: Sequence[str], lock_dir: Path) -> GpuLease | None:
    """Claim ``count`` free ids out of ``ids`` at once, or none (returns None).

    All claimers take the directory-wide allocation lock first, so a partial
    claim is never visible to another claimer.
    """
    if count > len(ids):
        raise GpuAllocationError(f"{count} GPU(s) requested but only {len(ids)} visible: {list(ids)}")
    lease = GpuLease(ids=[])
    if count == 0:
        return lease
    lock_dir.mkdir(parents=True, exist_ok=True)
    with _allocation_lock(lock_dir):
        for gpu_id in ids:
            fd = os.open(_lock_path(lock_dir, gpu_id), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            lease.ids.append(gpu_id)
            lease.fds.append(fd)
            if len(lease.ids) == count:
                break
        if len(lease.ids) < count:
            lease.release()
            return None
    for fd in lease.fds:  # who holds it, for people looking at the lock dir
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return lease


def claim(
    count: int,
    ids: Sequence[str],
    lock_dir: Path,
    *,
    timeout_s: float | None = None,
    poll_s: float = 0.5,
    on_wait: Callable[[], None] | None = None,
) -> GpuLease:
    """Claim ``count`` ids, waiting (up to ``timeout_s``) until enough are free."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    waited = False
    while True:
        lease = try_claim(count, ids, lock_dir)
        if lease is not None:
            return lease
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"no {count} free GPU(s) out of {list(ids)} within {timeout_s} s")
        if not waited and on_wait is not None:
            on_wait()
        waited = True
        time.sleep(poll_s * random.uniform(0.5, 1.5))


@dataclass
class GpuAssignment:
    """What a job gets: the environment to run with and the lease to hold."""

    env: dict[str, str]
    lease: GpuLease | None
    note: str


def assign_gpus(
    count: int,
    env: Mapping[str, str] | None = None,
    *,
    lock_dir: Path | None = None,
    timeout_s: float | None = None,
    poll_s: float = 0.5,
    log: Callable[[str], None] | None = None,
) -> GpuAssignment:
    """Environment for a job needing ``count`` GPUs, claiming ids if needed.

    Release the returned lease (or let the process exit) when the job ends.
    """
    if count < 0:
        raise GpuAllocationError(f"GPU count must be >= 0, got {count}")
    base = dict(os.environ if env is None else env)
    if count == 0:
        base[CUDA_ENV] = ""
        return GpuAssignment(base, None, "0 GPUs: CUDA_VISIBLE_DEVICES='' (CPU only)")
    reason = pass_through_reason(base)
    if reason is not None:
        return GpuAssignment(base, None, f"pass-through: {reason}")
    ids = visible_gpu_ids(base)
    if not ids:
        # A machine without GPUs (the CPU demo): run the job on the CPU.
        base[CUDA_ENV] = ""
        return GpuAssignment(base, None, f"{count} GPU(s) asked, none visible: running on CPU")
    lock_dir = default_lock_dir(base) if lock_dir is None else lock_dir
    on_wait = None
    if log is not None:
        on_wait = lambda: log(f"waiting for {count} free GPU(s) of {ids} (locks in {lock_dir})")  # noqa: E731
    lease = claim(count, ids, lock_dir, timeout_s=timeout_s, poll_s=poll_s, on_wait=on_wait)
    base[CUDA_ENV] = lease.cuda_visible_devices
    return GpuAssignment(base, lease, f"{CUDA_ENV}={lease.cuda_visible_devices!r}")


def exec_with_gpus(
    count: int,
    command: Sequence[str],
    *,
    lock_dir: Path | None = None,
    timeout_s: float | None = None,
    verbose: bool = True,
) -> None:
    """Replace this process by ``command`` running on ``count`` claimed GPUs.

    The lock descriptors are inherited through ``exec``, so the command (and
    any child that keeps them) holds the GPUs until it exits, however it ends.
    """
    if not command:
        raise GpuAllocationError("no command given")

    def log(message: str) -> None:
        print(f"with_gpus: {message}", file=sys.stderr, flush=True)

    assignment = assign_gpus(count, lock_dir=lock_dir, timeout_s=timeout_s, log=log)
    if verbose:
        log(assignment.note)
    if assignment.lease is not None:
        assignment.lease.make_inheritable()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(command[0], list(command), assignment.env)
