"""The scripts refuse out-of-range numbers as the config schema does
(issue 18, item 5): an argparse error naming the option and the range,
exit 2, before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INFER = ["infer.py", "--model", "c.py", "w.pth", "--images", "i.pkl", "--out", "o.pkl"]


@pytest.mark.parametrize("argv, expected", [
    ([*INFER, "--max-per-img", "0"], "argument --max-per-img: 0 is not an integer >= 1"),
    ([*INFER, "--nms-iou", "1.5"], "argument --nms-iou: 1.5 is not a number in [0, 1]"),
    ([*INFER, "--rpn-max", "0"], "argument --rpn-max: 0 is not an integer >= 1"),
    ([*INFER, "--mask-thr", "-1"], "argument --mask-thr: -1 is not a number in [0, 1]"),
    ([*INFER, "--score-thr", "nan"], "argument --score-thr: 'nan' is not a number in [0, 1]"),
    ([*INFER, "--rpn-nms", "0"], "argument --rpn-nms: 0 is not a number in (0, 1]"),
    (["merge.py", "--inputs", "a.csv", "--out", "o.csv", "--iou", "2"], "argument --iou: 2 is not a number in (0, 1]"),
    (["expand.py", "--input", "a.csv", "--classes-json", "c.json", "--out", "o.csv", "--score-thr", "-0.1"],
     "argument --score-thr: -0.1 is not a number in [0, 1]"),
])
def test_out_of_range_values_are_refused(tmp_path, argv, expected):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / argv[0]), *argv[1:]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert expected in proc.stderr, proc.stderr
    assert not any(tmp_path.iterdir())
