"""Download one official file to its place, atomically, checking its size.

    python scripts/download.py --url URL --out PATH
"""

from __future__ import annotations

import argparse
import shutil
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oidseg.errors import InputError, atomic_path, run_cli  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    with atomic_path(args.out) as tmp:
        try:
            with urllib.request.urlopen(args.url, timeout=60) as response, open(tmp, "wb") as fh:
                expected = response.headers.get("Content-Length")
                shutil.copyfileobj(response, fh, length=1 << 20)
        except OSError as exc:
            raise InputError(f"{args.url}: download failed ({exc})") from exc
        size = tmp.stat().st_size
        if expected is not None and int(expected) != size:
            raise InputError(f"{args.url}: got {size} bytes, expected {expected}")
    print(f"{args.out}: {size} bytes from {args.url}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(run_cli(main))
