"""Extract the mask PNGs of one split from its zip archives.

    python scripts/extract_masks.py --zips data/demo/masks/challenge-2019-train-masks-{0..f}.zip \
        --out-dir results/annotations/masks/train --flag results/annotations/masks/train.done

Every member must be a PNG (signature and IHDR checked); members are written
flat into --out-dir under their base name. --out-dir is emptied first (its
PNGs from an earlier run removed), so a mask removed from a zip does not
survive a re-extraction. A corrupt or missing zip or a
non-PNG member, or a second member with a mask name already extracted
(from this zip or another of the split), raises InputError naming the zip
and member; the flag file
(the declared output: one line per zip with its member count) is written
last and atomically, so it exists only after a complete extraction.
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oidseg.annotations import png_bytes_problem  # noqa: E402
from oidseg.errors import InputError, atomic_write_text, is_write_failure, run_cli  # noqa: E402


def extract_zip(zip_path: Path, out_dir: Path, seen: dict[str, str]) -> int:
    """Extract the PNG members of one zip into ``out_dir``; returns the count.
    ``seen`` maps each mask name extracted so far to "zip: member": a second
    member of that name (in this zip or an earlier one of the split) would
    replace the first mask without a word, so it is an error."""
    count = 0
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                name = os.path.basename(info.filename)
                if not name.endswith(".png"):
                    raise InputError(f"{zip_path}: member {info.filename}: not a .png file")
                if name in seen:
                    raise InputError(f"{zip_path}: member {info.filename}: a second mask named {name} "
                                     f"(the first: {seen[name]}); one of them would replace the other")
                seen[name] = f"{zip_path}: {info.filename}"
                data = zf.read(info)
                problem = png_bytes_problem(data)
                if problem:
                    raise InputError(f"{zip_path}: member {info.filename}: {problem}")
                with open(out_dir / name, "wb") as fh:
                    fh.write(data)
                count += 1
    except FileNotFoundError as exc:
        raise InputError(f"{zip_path}: zip archive is missing") from exc
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        if is_write_failure(exc):  # a full disk is not a corrupt zip
            raise
        raise InputError(f"{zip_path}: corrupt zip archive ({exc})") from exc
    return count


def empty_out_dir(out_dir: Path) -> int:
    """Create ``out_dir`` or remove what an earlier run left in it (PNGs of
    masks since removed from the zips would otherwise survive and hide a
    missing mask from the annotation stage's check). Only the PNGs and
    temporary files this script writes are removed; anything else there is
    an error, so a mistyped --out-dir cannot wipe a folder. Returns the
    number of files removed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    removed = 0
    for entry in os.scandir(out_dir):
        if entry.is_file(follow_symlinks=False) and (
            entry.name.endswith(".png") or entry.name.endswith(".tmp")
        ):
            os.unlink(entry.path)
            removed += 1
        else:
            raise InputError(
                f"{out_dir}: output folder holds {entry.name!r}, which is not a mask PNG; "
                "the folder is emptied before extraction, so it must hold only mask PNGs"
            )
    return removed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zips", nargs="+", required=True, type=Path)
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--flag", required=True, type=Path)
    args = parser.parse_args(argv)
    if args.flag.exists():
        args.flag.unlink()
    removed = empty_out_dir(args.out_dir)
    if removed:
        print(f"{args.out_dir}: removed {removed} files of an earlier extraction", file=sys.stderr)
    lines = []
    seen: dict[str, str] = {}
    for zip_path in args.zips:
        n = extract_zip(zip_path, args.out_dir, seen)
        lines.append(f"{zip_path}\t{n}")
        print(f"{zip_path}: {n} masks", file=sys.stderr)
    atomic_write_text(args.flag, "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(run_cli(main))
