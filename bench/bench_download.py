"""Throughput of the image download (issue 20) against a local S3 server.

moto's standalone server runs in its own process on 127.0.0.1 (tests/s3_server.py)
and holds --n objects of about --kb KB (noise JPEGs, so that every check runs:
length, MD5 of the ETag, JPEG structure); one shard download
(oidseg.image_download.ShardDownload, as a download_images job runs it) fetches
them all with 1, 8 and 32 threads into an empty folder. Printed: images/s,
MB/s, and the client's CPU seconds per image. Then the wall time of the full
image set at 100 MB/s and 1 GB/s, from the documented split sizes (the CVDF
README: https://github.com/cvdfoundation/open-images-dataset), or, with
--raw-dir holding the real annotation files, from their ImageID counts.

    PYTHONPATH=. .venv/bin/python bench/bench_download.py [--n 300] [--kb 300] [--threads 1 8 32]

Nothing leaves the machine: the server and the client are on 127.0.0.1, and
both share its CPUs (moto, a Python server, is the bottleneck here, not the
network).
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BUCKET = "open-images-dataset"

#: documented images and bytes per bucket prefix (CVDF README: "train (1,743,042)
#: ... 513GB", "validation (41,620) 12GB", "test (125,436) 36GB", challenge2018 10GB
#: for the 99,999 Kaggle test images); the run reads every image of the test and
#: validation lists it needs, and of train/V5 test only those with masks: these
#: are upper bounds for train and v5test
DOCUMENTED = {
    # split: (bucket prefix, images, bytes of the whole prefix)
    "train": ("train", 1_743_042, 513e9),
    "validation": ("validation", 41_620, 12e9),
    "v5test": ("test", 125_436, 36e9),
    "test": ("challenge2018", 99_999, 10e9),
}
ID_LISTS = {
    "train": "challenge-2019-train-segmentation-masks.csv",
    "validation": "challenge-2019-validation-segmentation-masks.csv",
    "v5test": "test-annotations-object-segmentation.csv",
    "test": "sample_submission.csv",
}


def noise_jpeg(rng: np.random.Generator, kb: int) -> bytes:
    """A JPEG of random pixels of about ``kb`` KB."""
    from PIL import Image

    side = 256
    while True:
        pixels = rng.integers(0, 256, size=(side, int(side * 4 / 3), 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=85)
        if buf.tell() >= kb * 1000 * 0.95:
            return buf.getvalue()
        side = int(side * (kb * 1000 / buf.tell()) ** 0.5) + 8


def count_images(raw_dir: Path) -> dict[str, int]:
    import pandas as pd

    return {split: int(pd.read_csv(raw_dir / name, usecols=["ImageID"], dtype=str)["ImageID"].nunique())
            for split, name in ID_LISTS.items()}


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="objects per run")
    parser.add_argument("--kb", type=int, default=300, help="object size (KB)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--raw-dir", type=Path, default=None,
                        help="the real annotation files: count their images")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "tests"))
    from s3_server import admin_client, moto_server, public_bucket

    from oidseg.image_download import FetchOptions, S3Source, ShardDownload

    rng = np.random.default_rng(0)
    distinct = [noise_jpeg(rng, args.kb) for _ in range(8)]
    ids = [f"a{i:015x}" for i in range(args.n)]
    mean_kb = np.mean([len(distinct[i % len(distinct)]) for i in range(args.n)]) / 1000
    rows = []
    with moto_server(separate_process=True) as endpoint, \
            tempfile.TemporaryDirectory(prefix="bench_download_") as tmp:
        client = admin_client(endpoint)
        public_bucket(client, BUCKET)
        t0 = time.time()
        for i, image_id in enumerate(ids):
            client.put_object(Bucket=BUCKET, Key=f"train/{image_id}.jpg",
                              Body=distinct[i % len(distinct)])
        print(f"{args.n} objects of {mean_kb:.0f} KB on moto at {endpoint} "
              f"(uploaded in {time.time() - t0:.1f} s)", file=sys.stderr)
        source = S3Source(endpoint, BUCKET, "train/{image_id}.jpg", addressing_style="path")
        for threads in args.threads:
            out = Path(tmp) / f"t{threads}"
            job = ShardDownload(ids, out, source,
                                FetchOptions(threads=threads, progress_interval_s=60),
                                label=f"bench {threads} threads", log=lambda msg: None)
            c0, w0 = time.process_time(), time.perf_counter()
            result = job.run()
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            assert result.fetched == args.n and not result.unavailable and not result.failed
            mb = result.fetched_bytes / 1e6
            rows.append((threads, args.n / wall, mb / wall, cpu / args.n * 1e3))
            shutil.rmtree(out)

    print(f"\nlocal moto S3 server, {args.n} x {mean_kb:.0f} KB objects, one shard job:")
    print(f"{'threads':>8} {'images/s':>9} {'MB/s':>7} {'client CPU ms/image':>20}")
    for threads, ips, mbs, cpu_ms in rows:
        print(f"{threads:>8} {ips:>9.1f} {mbs:>7.1f} {cpu_ms:>20.2f}")

    counts = count_images(args.raw_dir) if args.raw_dir else None
    print("\nfull image set" + (f" (ImageIDs counted in {args.raw_dir})" if counts else
                                " (documented prefix sizes: upper bounds for train and v5test)"))
    print(f"{'split':>10} {'prefix':>14} {'images':>10} {'KB/image':>9} {'GB':>7}")
    total_n = total_b = 0.0
    for split, (prefix, n_doc, bytes_doc) in DOCUMENTED.items():
        per = bytes_doc / n_doc
        n = counts[split] if counts else n_doc
        total_n += n
        total_b += n * per
        print(f"{split:>10} {prefix:>14} {n:>10,} {per / 1e3:>9.0f} {n * per / 1e9:>7.1f}")
    print(f"{'total':>10} {'':>14} {int(total_n):>10,} {'':>9} {total_b / 1e9:>7.1f}")
    best_cpu = min(r[3] for r in rows) / 1e3
    for label, rate in (("100 MB/s", 100e6), ("1 GB/s", 1e9)):
        seconds = total_b / rate
        procs = total_n / seconds * best_cpu  # CPU-seconds of client per second of wall
        print(f"at {label:>8}: {_hms(seconds)} wall; the client needs {procs:.1f} CPU cores "
              f"at {best_cpu * 1e3:.2f} ms per image (run that many jobs: "
              f"--resources downloads=N)")


if __name__ == "__main__":
    main()
