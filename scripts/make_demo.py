"""Write the embedded demo dataset (official raw-input formats, see oidseg/demo.py).

    python scripts/make_demo.py --out-dir data/demo --seed 0 \
        [--n-train 300] [--n-validation 120] [--n-v5test 60] [--n-test 40] \
        [--min-side 160] [--max-side 256]

The folder is built next to --out-dir and renamed into place; its last file
is data/demo/demo_manifest.json (a good Snakemake flag output).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oidseg.demo import DemoSizes, generate_demo  # noqa: E402
from oidseg.errors import run_cli  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    d = DemoSizes()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=d.n_train)
    parser.add_argument("--n-validation", type=int, default=d.n_validation)
    parser.add_argument("--n-v5test", type=int, default=d.n_v5test)
    parser.add_argument("--n-test", type=int, default=d.n_test)
    parser.add_argument("--min-side", type=int, default=d.min_side)
    parser.add_argument("--max-side", type=int, default=d.max_side)
    args = parser.parse_args(argv)
    sizes = DemoSizes(n_train=args.n_train, n_validation=args.n_validation,
                      n_v5test=args.n_v5test, n_test=args.n_test,
                      min_side=args.min_side, max_side=args.max_side)
    t0 = time.time()
    manifest = generate_demo(args.out_dir, seed=args.seed, sizes=sizes)
    print(f"demo dataset in {args.out_dir} ({time.time() - t0:.1f} s): {manifest['counts']}",
          file=sys.stderr)


if __name__ == "__main__":
    sys.exit(run_cli(main))
