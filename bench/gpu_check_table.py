"""The table of bench/gpu_check.sh: part status, full-size training and
ensemble throughput, and the GPU-hours extrapolated to the full run.

    python bench/gpu_check_table.py OUT_DIR     (prints Markdown)

Reads OUT_DIR/status.tsv (part, exit code, seconds, note) and the JSON files
of bench/bench_full_size.py (train-fp32.json, train-amp.json, infer.json,
infer-amp.json);
a missing or failed part shows as such, the others are still reported.
Extrapolation: test-time inference of the 99,999-image test set = images /
(images/s) per ensemble (the original: ~525 T4-hours, SPEC section 7);
training = the run config's iterations x 4 images / (images/s of one GPU)
(the original: 22 / 18 / 10 / 5 days on 4 T4 GPUs for L1 / L2 / L3 / P1).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_IMAGES = 99_999
ORIGINAL_TEST_T4_HOURS = 525
ORIGINAL_TRAIN_T4_HOURS = {"L1": 22 * 24 * 4, "L2": 18 * 24 * 4, "L3": 10 * 24 * 4, "P1": 5 * 24 * 4}


def load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def gb(mb: float | None) -> str:
    return "-" if mb is None else f"{mb / 1024:.1f}"


def stage_iters() -> dict[str, int]:
    try:
        import yaml

        models = yaml.safe_load((ROOT / "configs" / "run" / "openimages.yaml").read_text())["models"]
        return {m: sum(int(s["iters"]) for s in spec["stages"]) for m, spec in models.items()}
    except Exception:  # the table must print anyway
        return {}


def main(out_dir: str) -> None:
    out = Path(out_dir)
    lines = ["# oidseg GPU check", ""]
    status = []
    if (out / "status.tsv").is_file():
        status = [line.split("\t") for line in (out / "status.tsv").read_text().splitlines() if line]
    lines += ["| part | result | seconds |", "|---|---|---|"]
    lines += [f"| {p[0]} | {p[3] if len(p) > 3 else ''} | {p[2] if len(p) > 2 else ''} |" for p in status]

    fp32, amp, infer, infer_amp = (load(out / f) for f in ("train-fp32.json", "train-amp.json", "infer.json",
                                                            "infer-amp.json"))
    device = fp32.get("device") or amp.get("device") or infer.get("device") or "?"
    iters = stage_iters()
    lines += ["", f"## Training, full size, 1 image per iteration ({device})", "",
              "| model | fp32 it/s | fp32 peak GPU GB | AMP it/s | AMP peak GPU GB "
              "| GPU-hours for the run's iterations x 4 images (AMP, else fp32) | original (4 x T4) |",
              "|---|---|---|---|---|---|---|"]
    for model in ("L1", "L2", "L3", "P1"):
        cells, best = [], None
        for res in (fp32, amp):
            row = res.get("rows", {}).get(f"train-{model}", {})
            if "iters_per_s" in row:
                cells += [f"{row['iters_per_s']:.2f}", gb(row.get("peak_gpu_mb"))]
                best = row["iters_per_s"]
            else:
                cells += [row.get("error", "not run"), "-"]
        hours = (f"{iters[model] * 4 / best / 3600:,.0f} ({iters[model]:,} it)"
                 if best and model in iters else "-")
        lines.append(f"| {model} | {' | '.join(cells)} | {hours} | {ORIGINAL_TRAIN_T4_HOURS[model]:,} T4-h |")

    lines += ["", f"## Test-time ensemble, full size, 1333x800 images ({device})", "",
              "| ensemble | runs per image | images/s (fp32) | peak GPU GB | images/s (inference.amp) "
              "| peak GPU GB | GPU-hours for 99,999 images (AMP, else fp32) |",
              "|---|---|---|---|---|---|---|"]
    total = 0.0
    for part, name in (("infer-leaf", "leaf (L1, L2, L3)"), ("infer-P1", "parent (P1)")):
        cells, best, runs = [], None, "-"
        for res in (infer, infer_amp):
            row = res.get("rows", {}).get(part, {})
            if "images_per_s" in row:
                cells += [f"{row['images_per_s']:.3f}", gb(row.get("peak_gpu_mb"))]
                best, runs = row["images_per_s"], row.get("runs", runs)
            else:
                cells += [row.get("error", "not run"), "-"]
        if best:
            hours = TEST_IMAGES / best / 3600
            total += hours
        else:
            total = float("nan")
        lines.append(f"| {name} | {runs} | {' | '.join(cells)} | {f'{hours:,.1f}' if best else '-'} |")
    measured = f"{total:,.1f} GPU-hours on this GPU" if total == total else "not measured"
    lines += ["", f"Test-time inference of the 99,999-image test set: {measured} "
              f"(the original: ~{ORIGINAL_TEST_T4_HOURS} T4-hours).", ""]
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
