"""Time and peak memory of converting one released 2019 checkpoint (issue 10).

A randomly initialised full-size model of configs/released/<M>.py (default
L1, ResNeXt-101 64x4d, 136 M parameters) is written in the exact 2019 layout
and serialization (tests/released2019.py, the original's class order, about
545 MB); then ``scripts/convert_released.py`` converts it in a fresh
process, whose wall time and peak resident memory (``ru_maxrss`` of the
child) are reported.

    PYTHONPATH=. .venv/bin/python bench/bench_convert_released.py [--model L1] [--tmp /tmp/bench_released]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
KIND = {"L1": "leaf", "L2": "leaf", "L3": "leaf", "P1": "parent"}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=sorted(KIND), default="L1")
    parser.add_argument("--tmp", type=Path, default=None, help="scratch directory (default: a new temporary one)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "tests"))
    from released2019 import write_2019_checkpoint

    from oidseg.infer import build_model_from_config

    kind = KIND[args.model]
    original = json.loads((REPO / "configs/released/original_classes.json").read_text())[kind]
    ours = [original[i] for i in np.random.default_rng(0).permutation(len(original))]
    tmp = Path(tempfile.mkdtemp(dir=args.tmp)) if args.tmp else Path(tempfile.mkdtemp())
    try:
        torch.manual_seed(0)
        config = REPO / "configs/released" / f"{args.model}.py"
        model = build_model_from_config(config, len(original))
        src = write_2019_checkpoint(tmp / f"{args.model}_2019.pth", model.state_dict(), args.model, ours, original)
        del model
        (tmp / "classes.json").write_text(json.dumps({f"{kind}_classes": ours}))
        out = tmp / f"{args.model}.pth"
        cmd = [sys.executable, str(REPO / "scripts/convert_released.py"), "--released", str(src),
               "--config", str(config), "--classes-json", str(tmp / "classes.json"), "--kind", kind,
               "--out", str(out)]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak_mb, cpu_s = usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime
        print(f"model {args.model}: released file {src.stat().st_size / 1e6:.0f} MB, "
              f"converted {out.stat().st_size / 1e6:.0f} MB")
        print(f"conversion (fresh process, incl. imports): {seconds:.1f} s wall, {cpu_s:.1f} CPU s, "
              f"peak RSS {peak_mb:.0f} MB")
        print(proc.stderr.strip().splitlines()[-1])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
