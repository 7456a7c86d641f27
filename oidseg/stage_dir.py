"""The work dir of a training stage: one writer, one job, intact checkpoints
(issue 13, items 1, 5 and 8).

Before a stage trains, the process that owns its ``--work-dir`` (the one
started by the rule; not the ranks of a distributed run):

1. takes an exclusive ``fcntl.flock`` on ``WORK_DIR/.lock`` for the rest of
   its life (the file holds its pid); a second trainer on the same work dir
   fails at once naming that pid;
2. compares the job's fingerprint (``job.json``: the sha256 of the resolved
   model config, the annotation pickle, the ordered list, the starting
   weights, and every argument that changes the trained weights) with the
   one stored beside the periodic checkpoints. A different or absent
   fingerprint moves everything in the work dir to ``WORK_DIR.stale/``
   (replacing an older one) and starts the stage afresh, saying what
   differed on stderr; the same fingerprint resumes;
3. picks the newest intact ``iter_N.pth`` (a zip whose members pass their
   CRC check): a truncated newer one (a job killed while saving) is removed
   and the stage resumes from the previous one; mmengine's
   ``last_checkpoint`` marker is rewritten to name it (or removed). A
   checkpoint that would need more than torch's weights-only allow-list
   (not one of ours) is refused.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable

from oidseg.errors import InputError, atomic_write_text

FINGERPRINT_FILE = "job.json"
LOCK_FILE = ".lock"
#: every attempt's stderr, appended (Snakemake deletes a job's log before it
#: runs: a start refused by the lock would otherwise lose the holder's log)
WORK_LOG_FILE = "train.log"
STALE_SUFFIX = ".stale"
LAST_MARKER = "last_checkpoint"
FINGERPRINT_FORMAT = "oidseg-train-job/1"
# arguments that change the trained weights (not: work dir, outputs,
# checkpoint/log intervals, threads, the process-group backend)
RESULT_ARGS = ("iters", "skip", "lr_factor", "aug", "images_per_gpu", "gpus", "seed", "amp",
               "workers")

_held_locks: dict[str, int] = {}


def _none(value: str | None) -> str | None:
    return None if value is None or value.lower() in ("", "none") else value


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def config_sha256(config: str | Path) -> str:
    """sha256 of the resolved model config (every ``_base_`` file included)."""
    from mmengine.config import Config

    resolved = Config.fromfile(str(config)).to_dict()
    text = json.dumps(resolved, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def job_fingerprint(args: argparse.Namespace) -> dict[str, Any]:
    """What makes this stage's weights: input contents and arguments."""
    load_from, pretrained = _none(args.load_from), _none(args.pretrained)
    fingerprint: dict[str, Any] = {
        "format": FINGERPRINT_FORMAT,
        "config": config_sha256(args.config),
        "ann": file_sha256(args.ann),
        "order": file_sha256(args.order),
        "load_from": file_sha256(load_from) if load_from else None,
        # ignored with --load-from (see oidseg.train); a model-zoo name
        # (``torchvision://resnet101``) stands for itself
        "pretrained": (None if not pretrained or load_from else
                       pretrained if "://" in pretrained else file_sha256(pretrained)),
    }
    for name in RESULT_ARGS:
        fingerprint[name] = getattr(args, name, None)
    return fingerprint


def fingerprint_changes(old: dict | None, new: dict) -> list[str]:
    """Human-readable differences (``[]``: the same job)."""
    if old is None:
        return ["no job fingerprint (job.json) beside the checkpoints"]
    changes = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before != after:
            if isinstance(before, str) and isinstance(after, str) and len(after) == 64:
                before, after = f"sha256 {before[:12]}", f"sha256 {after[:12]}"
            changes.append(f"{key}: {before} -> {after}")
    return changes


def lock_work_dir(work_dir: str | Path) -> int:
    """Hold an exclusive lock on ``work_dir/.lock`` until this process ends
    (or :func:`unlock_work_dir`); returns its file descriptor."""
    work_dir = Path(work_dir)
    key = str(work_dir.resolve())
    if key in _held_locks:
        return _held_locks[key]
    work_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(work_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise InputError(f"{work_dir}: another training job (pid {holder}) holds this work dir; "
                         f"wait for it to end or stop it (its log: {work_dir / WORK_LOG_FILE})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    _held_locks[key] = fd
    return fd


def unlock_work_dir(work_dir: str | Path) -> None:
    fd = _held_locks.pop(str(Path(work_dir).resolve()), None)
    if fd is not None:
        os.close(fd)  # closing the only descriptor releases the flock


def checkpoint_iter(path: str | Path) -> int | None:
    """N of mmengine's ``iter_N.pth``; None for another name."""
    stem = Path(path).stem
    return int(stem[5:]) if stem.startswith("iter_") and stem[5:].isdigit() else None


def checkpoint_is_intact(path: str | Path) -> bool:
    """A torch zip checkpoint whose central directory and member CRCs are sound."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False


def newest_intact_checkpoint(work_dir: str | Path, log: Callable[[str], None]) -> Path | None:
    """The newest intact ``iter_N.pth``; newer broken ones are removed."""
    work_dir = Path(work_dir)
    found = sorted(((checkpoint_iter(p), p) for p in work_dir.glob("iter_*.pth")
                    if checkpoint_iter(p) is not None), reverse=True)
    for _, path in found:
        if checkpoint_is_intact(path):
            return path
        log(f"train: {path} is truncated or corrupt (a job killed while saving?): removed")
        path.unlink()
    return None


def refuse_unsafe_checkpoint(path: Path) -> None:
    """A checkpoint whose pickle names any global beyond torch's
    weights-only allow-list (ours never do) is refused before mmengine
    reads it (torch's public scan of the pickle; no tensor is loaded)."""
    import torch

    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    if unsafe:
        raise InputError(f"{path}: checkpoint holds objects other than tensors and plain data "
                         f"({', '.join(unsafe[:3])}); refused: unpickling it could run code")


def _move_aside(work_dir: Path, log: Callable[[str], None], why: list[str]) -> None:
    stale = work_dir.with_name(work_dir.name + STALE_SUFFIX)
    if stale.exists():
        shutil.rmtree(stale)
    stale.mkdir()
    for entry in work_dir.iterdir():
        if entry.name != LOCK_FILE:
            shutil.move(str(entry), str(stale / entry.name))
    log(f"train: {work_dir} held another job's checkpoints ({'; '.join(why)}); "
        f"moved them to {stale}; this stage starts afresh")


def prepare_work_dir(args: argparse.Namespace,
                     log: Callable[[str], None] | None = None) -> Path | None:
    """Lock ``args.work_dir``, drop another job's or broken checkpoints, and
    return the checkpoint to resume from (None: start afresh)."""
    if log is None:
        def log(line: str) -> None:
            print(line, file=sys.stderr, flush=True)
    work_dir = Path(args.work_dir)
    lock_work_dir(work_dir)
    fingerprint = job_fingerprint(args)
    stored_path = work_dir / FINGERPRINT_FILE
    try:
        stored = json.loads(stored_path.read_text())
    except (OSError, ValueError):
        stored = None
    changes = fingerprint_changes(stored, fingerprint)
    if changes:
        leftovers = [p for p in work_dir.iterdir() if p.name not in (LOCK_FILE, FINGERPRINT_FILE)]
        if leftovers:
            _move_aside(work_dir, log, changes)
        atomic_write_text(stored_path, json.dumps(fingerprint, indent=1, sort_keys=True) + "\n")
    resume = newest_intact_checkpoint(work_dir, log)
    marker = work_dir / LAST_MARKER
    if resume is not None:
        refuse_unsafe_checkpoint(resume)
        atomic_write_text(marker, str(resume))
        log(f"train: same job as the checkpoints in {work_dir}: resuming from {resume.name}")
    elif marker.exists():
        marker.unlink()
    return resume


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def tee_stderr(path: str | Path, banner: str) -> None:
    """From now on, everything written to this process's stderr (fd 2:
    Python, C libraries and child processes such as torchrun's ranks) also
    goes to ``path``, appended after ``banner``: the work dir keeps the log
    of every attempt of the stage, which Snakemake does not touch. A write
    to ``path`` that fails (a full disk) is dropped; stderr goes on."""
    import atexit
    import threading

    sink = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    _write_all(sink, banner.encode("utf-8", "replace"))
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        while data := os.read(read_end, 1 << 16):
            for fd in (original, sink):
                try:
                    _write_all(fd, data)
                except OSError:
                    pass

    thread = threading.Thread(target=pump, name="tee-stderr", daemon=True)
    thread.start()

    def stop() -> None:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(original, 2)  # this process's last write end of the pipe
        thread.join(timeout=10)

    atexit.register(stop)
