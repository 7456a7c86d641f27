"""Errors and atomic output helpers shared by every script."""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Iterator


class InputError(Exception):
    """Bad input: the message names the file, the row or ID, and the problem."""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched,
    so an output is never half-written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


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
    """Run a script's ``main``; turn :class:`InputError` into a clear
    one-line message on stderr and exit status 2."""
    import sys

    try:
        main_fn(argv)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
