"""Fetch the images of one split shard from the dataset's S3 bucket (resumable, verified).

    python scripts/download_images.py --ids challenge-2019-train-segmentation-masks.csv \
        --split train --shard 3 --image-dir data/openimages/images/train \
        --endpoint-url https://s3.amazonaws.com --bucket open-images-dataset \
        --key-template 'train/{image_id}.jpg' [--threads 32] [--retries 8] \
        [--allow-missing 0] [--drop-images ID ...] \
        --manifest data/openimages/images/manifests/train/3.csv \
        --skipped data/openimages/images/manifests/train/3.skipped.csv

--ids is a CSV with an ImageID column (a masks CSV, or the Kaggle test list);
the job fetches its distinct IDs that start with --shard, minus --drop-images,
into --image-dir/{ImageID}.jpg (oidseg/image_download.py). Images already
there and valid are kept; the resume state is --cache (default: next to the
manifest, .{shard}.verified.csv).

Outputs, written at the end and only on success:
  --manifest  ImageID,Bytes,ImageWidth,ImageHeight,MD5 of every image of the shard
  --skipped   ImageID,Reason of the images that are not in the bucket (or not a
              complete JPEG there), at most --allow-missing of them; more is an
              error that lists them. The test split never skips: a submission
              covers every test image.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oidseg.errors import InputError, run_cli  # noqa: E402
from oidseg.image_download import (  # noqa: E402
    FetchOptions, S3Source, ShardDownload, shard_ids, write_shard_outputs,
)
from oidseg.raw import check_ids, read_csv_checked  # noqa: E402

SPLITS = ("train", "validation", "v5test", "test")
#: how many unavailable IDs an error message lists
LISTED = 50


def _read_ids(path: Path, split: str) -> list[str]:
    kind = "test image list" if split == "test" else "masks CSV"
    frame = read_csv_checked(path, ["ImageID"], kind=kind, allow_no_rows=split != "test")
    check_ids(path, frame)
    return frame["ImageID"].tolist()


def _unavailable_error(args, label: str, unavailable: dict[str, str], allowed: int) -> str:
    ids = sorted(unavailable)
    listed = "\n".join(f"  {i}: {unavailable[i]}" for i in ids[:LISTED])
    more = f"\n  ... and {len(ids) - LISTED} more" if len(ids) > LISTED else ""
    head = (f"{label}: {len(ids)} image(s) of {args.ids} cannot be fetched from "
            f"s3://{args.bucket} (key {args.key_template!r}):\n{listed}{more}\n")
    if args.split == "test":
        return head + (
            "The test images cannot be left out (the submission must cover every image of "
            f"the test list): put each one by hand at {args.image_dir}/<ImageID>.jpg "
            "(for example from Kaggle's copy of the test set) and run again.")
    quoted = ", ".join(f'"{i}"' for i in ids[:LISTED])
    return head + (
        "Leave them out of the run: add them to annotations.drop_images in your config file "
        f"(keep the IDs already there), e.g.\n  annotations:\n    drop_images: [..., {quoted}]\n"
        f"or let this many be skipped per download job: download.allow_missing: {len(ids)} "
        f"(now {allowed}); skipped IDs are written to {args.skipped} and the annotation "
        "stage leaves them out.")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("--ids", required=True, type=Path, help="CSV with an ImageID column")
    parser.add_argument("--split", required=True, choices=SPLITS)
    parser.add_argument("--shard", required=True, help="first hex digit of the ImageIDs")
    parser.add_argument("--image-dir", required=True, type=Path)
    parser.add_argument("--endpoint-url", default="", help="empty: AWS's own endpoint")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--key-template", required=True, help="object key with {image_id}")
    parser.add_argument("--addressing-style", choices=("auto", "path", "virtual"), default="auto")
    parser.add_argument("--signed", action="store_true",
                        help="sign requests with the default AWS credentials (a private mirror)")
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--retries", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument("--backoff", type=float, default=0.5, help="first retry delay (s)")
    parser.add_argument("--no-verify-etag", action="store_true",
                        help="do not compare single-part ETags with the MD5")
    parser.add_argument("--progress-interval", type=float, default=30.0, help="seconds")
    parser.add_argument("--allow-missing", type=int, default=0)
    parser.add_argument("--drop-images", nargs="*", default=[])
    parser.add_argument("--manifest", required=True, type=Path)
    parser.add_argument("--skipped", required=True, type=Path)
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args(argv)
    for name in ("threads", "retries", "allow_missing"):
        if getattr(args, name) < (1 if name == "threads" else 0):
            raise InputError(f"--{name.replace('_', '-')} {getattr(args, name)} is out of range")
    label = f"download_images {args.split}/{args.shard}"
    source = S3Source(args.endpoint_url or None, args.bucket, args.key_template,
                      region=args.region, anonymous=not args.signed,
                      addressing_style=args.addressing_style)
    options = FetchOptions(threads=args.threads, retries=args.retries, timeout_s=args.timeout,
                           backoff_s=args.backoff, verify_etag=not args.no_verify_etag,
                           progress_interval_s=args.progress_interval)
    ids = shard_ids(_read_ids(args.ids, args.split), args.shard,
                    [] if args.split == "test" else args.drop_images, source=str(args.ids))
    cache = args.cache or args.manifest.with_name(f".{args.shard}.verified.csv")
    print(f"[{label}] {len(ids)} images of {args.ids} from {source.where()} "
          f"(key {args.key_template!r}) into {args.image_dir}, {args.threads} threads",
          file=sys.stderr, flush=True)
    t0 = time.time()
    result = ShardDownload(ids, args.image_dir, source, options, label=label,
                           cache_path=cache).run()
    if result.failed:
        first = sorted(result.failed)[0]
        raise InputError(
            f"{label}: {len(result.failed)} image(s) still failing after {args.retries} retries "
            f"(first: {first}: {result.failed[first]}); run again to resume "
            f"({len(result.records)} images are in place)")
    allowed = 0 if args.split == "test" else args.allow_missing
    if len(result.unavailable) > allowed or (args.split == "test" and result.unavailable):
        raise InputError(_unavailable_error(args, label, result.unavailable, allowed))
    write_shard_outputs(args.manifest, args.skipped, result)
    total = sum(r.nbytes for r in result.records.values())
    skipped = f", {len(result.unavailable)} skipped (listed in {args.skipped})" \
        if result.unavailable else ""
    print(f"[{label}] {len(result.records)} images ({total / 1e6:.1f} MB) in place: "
          f"{result.fetched} fetched ({result.fetched_bytes / 1e6:.1f} MB), {result.present} "
          f"already there{skipped}, {result.retries} retries, {time.time() - t0:.1f} s",
          file=sys.stderr)


if __name__ == "__main__":
    # a SIGTERM (a cancelled job) saves the resume state as Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(run_cli(main))
