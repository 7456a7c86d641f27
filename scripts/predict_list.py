"""One shard of a folder of the user's images -> an image list (``predict``).

    python scripts/predict_list.py --folder DIR --shard 3 --shards 4 \
        --expect DIGEST [--skip-unreadable] --out results/predict/lists/03.pkl

The shard's images (JPEG and PNG under DIR, recursively, assigned to shards
by a hash of their relative paths: ``oidseg.predict``) are read whole, EXIF
orientation applied; the list records their upright sizes, in the
annotation stage's image-list format with ``"exif_orientation": True``, so
``scripts/infer.py`` reads them the same way. ``--expect`` is the digest of
the shard's file list that the workflow planned with: another listing now
(the folder changed) is an error. An unreadable image is an error naming it
(exit 2, no output), or with --skip-unreadable listed as skipped.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oidseg.cli import nonnegative_int, positive_int  # noqa: E402
from oidseg.errors import run_cli  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", required=True, help="the user's image folder (predict.images)")
    parser.add_argument("--shard", required=True, type=nonnegative_int)
    parser.add_argument("--shards", required=True, type=positive_int)
    parser.add_argument("--expect", required=True, help="digest of the shard's file list when planned")
    parser.add_argument("--skip-unreadable", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--out", required=True, type=Path, help="image-list pickle")
    args = parser.parse_args(argv)
    if args.shard >= args.shards:
        parser.error(f"--shard {args.shard} is not below --shards {args.shards}")

    from oidseg.predict import check_listing, list_digest, read_shard, scan_folder, shard_files, write_shard_list

    start = time.perf_counter()
    scan = scan_folder(args.folder)
    files = shard_files(scan.images, args.shard, args.shards)
    check_listing(list_digest(files), args.expect, args.folder, f"{len(files)} images of shard {args.shard}")

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    records, skipped = read_shard(args.folder, files, skip_unreadable=args.skip_unreadable, progress=log)
    write_shard_list(args.out, records, skipped, shard=args.shard, n_shards=args.shards)
    log(f"predict_list: {args.folder} shard {args.shard}/{args.shards}: {len(records)} images, "
        f"{len(skipped)} unreadable skipped -> {args.out}, {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    sys.exit(run_cli(main))
