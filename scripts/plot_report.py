"""Report figures: per-class AP bars, training loss curves and (with
``--pr``) precision-recall curves of the classes with the most ground truth.

    python scripts/plot_report.py --per-class final.per_class.csv \
        --logs results/models/L1/stage1.log.jsonl ... --out-ap ap.png --out-loss loss.png \
        [--pr final.pr.npz --n-pr-classes 8 --out-pr pr_curves.png]
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
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oidseg.errors import InputError, atomic_path, run_cli  # noqa: E402
from oidseg.visualize import PrCurves, read_pr_curves  # noqa: E402

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


def plot_pr(curves: PrCurves, n_classes: int, out: str) -> None:
    """Precision-recall curves of the ``n_classes`` classes with the most
    ground truth, from the scorer's own matching (``evaluate.py --out-pr``);
    the shaded area under the monotone precision envelope is the class AP."""
    top = curves.top_classes(n_classes)
    ncols = max(1, min(4, len(top)))
    nrows = max(1, -(-len(top) // ncols))
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, figsize=(3 * ncols, 2.6 * nrows))
    for ax in axes.ravel()[len(top):]:
        ax.axis("off")
    if not top:
        axes[0, 0].text(0.5, 0.5, "no class has ground truth", ha="center", va="center")
    for ax, k in zip(axes.ravel(), top):
        precision, recall = curves.precision[k], curves.recall[k]
        envelope = np.maximum.accumulate(precision[::-1])[::-1] if precision.size else precision
        ax.fill_between(np.r_[0.0, recall], np.r_[envelope[:1], envelope], step="pre",
                        alpha=0.25, color="tab:blue", linewidth=0)
        ax.plot(recall, precision, ".-", color="tab:blue", markersize=2, linewidth=0.8)
        if not precision.size:
            ax.text(0.5, 0.5, "no scored detection", ha="center", va="center", fontsize=7)
        name = curves.names[k] or curves.classes[k]
        ax.set_title(f"{name}: {curves.num_gt[k]} GT, AP {curves.average_precision[k]:.3f}",
                     fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall", fontsize=7)
        ax.set_ylabel("precision", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"precision-recall, the {len(top)} classes with the most ground truth", fontsize=9)
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
    parser.add_argument("--pr", type=Path, default=None, help="evaluate.py --out-pr file")
    parser.add_argument("--n-pr-classes", type=int, default=8)
    parser.add_argument("--out-pr", default=None, help="PNG: PR curves (needs --pr)")
    args = parser.parse_args(argv)
    if (args.pr is None) != (args.out_pr is None):
        parser.error("--pr and --out-pr go together")
    if args.n_pr_classes < 1:
        parser.error("--n-pr-classes must be at least 1")
    curves = read_pr_curves(args.pr) if args.pr is not None else None  # checked first
    plot_ap(args.per_class, args.out_ap)
    plot_losses(args.logs, args.out_loss)
    if curves is not None:
        plot_pr(curves, args.n_pr_classes, args.out_pr)


if __name__ == "__main__":
    sys.exit(run_cli(main))
