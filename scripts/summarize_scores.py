"""Gather the per-entry score JSONs into one table (our SPEC section 9).

    python scripts/summarize_scores.py --descriptions JSON --out summary.csv a.json b.json ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oidseg.errors import InputError, atomic_path, run_cli  # noqa: E402

COLUMNS = ["entry", "description", "mAP", "leaf_mAP", "parent_mAP", "num_classes"]


def read_score(path: Path) -> dict:
    try:
        score = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read score JSON ({exc})") from exc
    missing = [k for k in ("mAP", "leaf_mAP", "parent_mAP") if k not in score]
    if missing:
        raise InputError(f"{path}: score JSON lacks {', '.join(missing)}")
    return score


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--descriptions", default="{}", help="JSON object entry -> text")
    parser.add_argument("--out", required=True)
    parser.add_argument("scores", nargs="+", type=Path)
    args = parser.parse_args(argv)
    descriptions = json.loads(args.descriptions)
    rows = []
    for path in args.scores:
        score = read_score(path)
        entry = score.get("name") or path.stem
        rows.append(
            {
                "entry": entry,
                "description": descriptions.get(entry, ""),
                "mAP": score["mAP"],
                "leaf_mAP": score["leaf_mAP"],
                "parent_mAP": score["parent_mAP"],
                "num_classes": score.get("num_classes_scored", ""),
            }
        )
    table = pd.DataFrame(rows, columns=COLUMNS)
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    print(table.to_string(index=False), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(run_cli(main))
