"""Report figures: per-class AP bars and training loss curves.

    python scripts/plot_report.py --per-class final.per_class.csv \
        --logs results/models/L1/stage1.log.jsonl ... --out-ap ap.png --out-loss loss.png
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oidseg.errors import InputError, atomic_path, run_cli  # noqa: E402

LOG_NAME = re.compile(r"(?P<model>[^/]+)/stage(?P<stage>\d+)\.log\.jsonl$")


def read_loss_log(path: Path) -> pd.DataFrame:
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: line {lineno}: not JSON ({exc})") from exc
        if "loss" in record and "iter" in record:
            rows.append((record["iter"], record["loss"]))
    return pd.DataFrame(rows, columns=["iter", "loss"])


def plot_losses(logs: list[Path], out: str) -> None:
    by_model: dict[str, list[tuple[int, Path]]] = defaultdict(list)
    for path in logs:
        match = LOG_NAME.search(path.as_posix())
        if not match:
            raise InputError(f"{path}: not a results/models/<model>/stage<k>.log.jsonl")
        by_model[match["model"]].append((int(match["stage"]), path))
    fig, axes = plt.subplots(1, max(1, len(by_model)), figsize=(4 * max(1, len(by_model)), 3.2))
    axes = axes if hasattr(axes, "__len__") else [axes]
    for ax, (model, stages) in zip(axes, sorted(by_model.items())):
        offset = 0
        for stage, path in sorted(stages):
            frame = read_loss_log(path)
            if not frame.empty:
                ax.plot(frame["iter"] + offset, frame["loss"], label=f"stage {stage}")
                offset += int(frame["iter"].max())
        ax.set_title(model)
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def plot_ap(per_class: Path, out: str) -> None:
    table = pd.read_csv(per_class).sort_values("AP", ascending=True)
    label = table["DisplayName"].fillna(table["LabelName"]) if "DisplayName" in table else table["LabelName"]
    fig, ax = plt.subplots(figsize=(6, 0.25 * len(table) + 1.2))
    colors = ["tab:orange" if k != "leaf" else "tab:blue" for k in table.get("kind", ["leaf"] * len(table))]
    ax.barh(label, table["AP"], color=colors)
    ax.set_xlabel("AP (mask IoU 0.5)")
    ax.set_xlim(0, 1)
    ax.set_title("per-class AP (blue: leaf, orange: parent)")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-class", type=Path, required=True)
    parser.add_argument("--logs", type=Path, nargs="*", default=[])
    parser.add_argument("--out-ap", required=True)
    parser.add_argument("--out-loss", required=True)
    args = parser.parse_args(argv)
    plot_ap(args.per_class, args.out_ap)
    plot_losses(args.logs, args.out_loss)


if __name__ == "__main__":
    sys.exit(run_cli(main))
