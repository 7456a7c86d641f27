#!/usr/bin/env python
"""Train one stage of a model (SPEC section 5); see oidseg/train.py.

scripts/train.py --config configs/demo/L1.py --ann results/annotations/leaf_train.pkl \
    --order results/annotations/lists/leaf.npy --skip 0 --iters N --lr-factor 1.0 \
    --aug multiscale|single|photometric --load-from PREV.pth|none --pretrained PATH|none \
    --work-dir work/L1/stage1 --out results/models/L1/stage1.pth \
    --log-jsonl results/models/L1/stage1.log.jsonl [--images-per-gpu 1] [--gpus N] [--amp] \
    [--checkpoint-interval K] [--log-interval K] [--workers W] [--seed 0] [--threads T]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oidseg.errors import run_cli  # noqa: E402
from oidseg.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_cli(main))
