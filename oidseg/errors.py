"""Errors and atomic output helpers shared by every script."""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator


class InputError(Exception):
    """Bad input: the message names the file, the row or ID, and the problem."""


class StageError(Exception):
    """A job that cannot produce a correct result from good input (a training
    stage that diverged): the message names what happened and where."""


#: errno values of a write that failed for lack of room or permission on the
#: output's file system (a full disk, a quota, a file size limit, read-only)
_WRITE_ERRNOS = {"ENOSPC", "EDQUOT", "EFBIG", "EROFS"}


class OutputError(OSError):
    """An output that could not be written: names the file and the reason."""


#: when this module was imported: temporary files older than this were left
#: by other (earlier, killed) processes
_STARTED = time.time()
#: ``tempfile.mkstemp``'s random part: 8 characters of this alphabet
_TMP_RANDOM = "[a-z0-9_]{8}"


def remove_stale_tmp(path: str | Path) -> list[Path]:
    """Remove the temporary files ``.NAME.XXXXXXXX.tmp`` of ``path`` (NAME its
    file name) that :func:`atomic_path` of an earlier process left behind when
    it was killed; files modified since this process started are kept.
    Returns the removed paths."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{_TMP_RANDOM}\.tmp")
    prefix = f".{path.name}."
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        if not (entry.name.startswith(prefix) and pattern.fullmatch(entry.name)):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < _STARTED:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched,
    so an output is never half-written. Temporary files of ``path`` that a
    killed earlier job left behind are removed first (:func:`remove_stale_tmp`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600: give the output the usual umask permissions
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if is_write_failure(exc) and not isinstance(exc, OutputError):
            raise OutputError(exc.errno, f"{path}: could not be written ({exc.strerror}); "
                                         "nothing was left behind") from exc
        raise


def is_write_failure(exc: BaseException) -> bool:
    """An OSError of a full disk / quota / size limit / read-only file system."""
    import errno

    return isinstance(exc, OSError) and errno.errorcode.get(exc.errno or 0) in _WRITE_ERRNOS


def read_utf8_text(path: str | Path, kind: str = "file") -> str:
    """The text of a UTF-8 file (a leading byte-order mark is dropped).
    A missing file or bytes that are not UTF-8 raise :class:`InputError`
    naming the file and, for bad bytes, the byte offset."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read {kind} ({exc})") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(
            f"{path}: {kind} is not UTF-8 text: byte {data[exc.start]:#04x} at byte offset "
            f"{exc.start} (line {line})"
        ) from None
    return text[1:] if text.startswith("\ufeff") else text


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_pickle(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)


def load_pickle(path: str | Path, *, kind: str = "pickle") -> Any:
    """Load a pickle written by this workflow; a truncated or corrupt file
    raises :class:`InputError` naming it."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: {kind} file is missing") from exc
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"{path}: {kind} file is truncated or corrupt ({exc})") from exc


def run_cli(main_fn, argv=None) -> int:
    """Run a script's ``main``; turn :class:`InputError`, :class:`StageError`
    and a failed write (full disk, quota, read-only: :class:`OutputError`)
    into a clear one-line message on stderr and exit status 2."""
    import sys

    try:
        main_fn(argv)
    except (InputError, StageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if not is_write_failure(exc):
            raise
        if isinstance(exc, OutputError):
            print(f"error: {exc.strerror}", file=sys.stderr)
        else:
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"error: {where}could not be written ({exc.strerror})", file=sys.stderr)
        return 2
    return 0
