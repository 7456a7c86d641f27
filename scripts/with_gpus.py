"""Run a command on its own GPU ids: ``with_gpus.py --gpus K -- CMD ...``.

Sets ``CUDA_VISIBLE_DEVICES`` for CMD to K GPU ids claimed with file locks
(see ``oidseg.gpu_alloc``), waiting while fewer than K are free, then execs
CMD, which holds the ids until it exits. Under SLURM or with
``CUDA_VISIBLE_DEVICES`` already set it runs CMD unchanged; ``--gpus 0``, or
no GPU visible at all, runs CMD with ``CUDA_VISIBLE_DEVICES=""`` (CPU).

Exit status: CMD's own; 2 for an impossible request; 127 if CMD is not found.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from oidseg.errors import InputError, run_cli  # noqa: E402
from oidseg.gpu_alloc import GpuAllocationError, exec_with_gpus  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        usage="%(prog)s --gpus K [--timeout S] [--lock-dir DIR] [--quiet] -- COMMAND [ARG ...]",
    )
    parser.add_argument("--gpus", type=int, required=True, help="number of GPUs the command needs")
    parser.add_argument(
        "--timeout", type=float, default=None, help="give up after S seconds of waiting (default: wait)"
    )
    parser.add_argument(
        "--lock-dir",
        type=Path,
        default=None,
        help="lock directory (default: $OIDSEG_GPU_LOCK_DIR, else <tmp>/oidseg-gpu-locks-<uid>)",
    )
    parser.add_argument("--quiet", action="store_true", help="do not print the assignment on stderr")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if "--" not in argv:
        parser.error("missing '--' before the command")
    split = argv.index("--")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    if not command:
        parser.error("no command after '--'")
    if args.gpus < 0:
        raise InputError(f"--gpus {args.gpus}: must be >= 0")
    try:
        exec_with_gpus(
            args.gpus, command, lock_dir=args.lock_dir, timeout_s=args.timeout, verbose=not args.quiet
        )
    except (GpuAllocationError, TimeoutError) as exc:
        raise InputError(f"--gpus {args.gpus}: {exc}") from exc
    except FileNotFoundError as exc:
        print(f"error: command not found: {command[0]} ({exc})", file=sys.stderr)
        sys.exit(127)
    except PermissionError as exc:
        print(f"error: cannot execute {command[0]} ({exc})", file=sys.stderr)
        sys.exit(126)


if __name__ == "__main__":
    sys.exit(run_cli(main))
