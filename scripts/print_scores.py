"""Print the evaluation table of a finished run, ending with the final mAP.

    python scripts/print_scores.py results/eval/summary.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oidseg.errors import InputError, run_cli  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("summary", type=Path)
    args = parser.parse_args(argv)
    if not args.summary.exists():
        raise InputError(f"{args.summary}: missing; run `snakemake evaluate` first")
    table = pd.read_csv(args.summary)
    print("Held-out validation scores (official OID instance-segmentation metric):")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    final = table.loc[table["entry"] == "final"]
    if final.empty:
        raise InputError(f"{args.summary}: no 'final' entry")
    print(f"\nfinal validation mAP: {float(final['mAP'].iloc[0]):.4f}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
