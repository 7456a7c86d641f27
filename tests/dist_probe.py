"""A test-only mmengine hook (tests/test_ddp.py): what each rank of a
training run reads, and a way to stop one rank at a known iteration.

Imported by a test config through ``custom_imports`` (``tests/`` on
PYTHONPATH). Per rank it writes into ``out_dir``:

- ``rank<R>.pid``: the worker's process id (before training);
- ``rank<R>.jsonl``: one ``{"iter", "indices"}`` line per iteration, the
  data_list indices of the batch (the synthetic images' ``img_id`` is their
  index in hexadecimal, see ``make_synthetic_dataset``);
- with the environment variable ``OIDSEG_PROBE_STALL=R:I``: rank R writes
  ``stalled`` (its pid) after iteration I and then sleeps, so that a test can
  SIGKILL it mid-stage at a known point (an environment variable, not a
  config key, so that the rerun's command and config are the same).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from mmdet.registry import HOOKS
from mmengine.hooks import Hook


@HOOKS.register_module()
class BatchProbeHook(Hook):
    priority = "LOWEST"

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        stall = os.environ.get("OIDSEG_PROBE_STALL", "-1:-1").split(":")
        self.stall_rank, self.stall_iter = int(stall[0]), int(stall[1])

    def before_train(self, runner) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"rank{runner.rank}.pid").write_text(str(os.getpid()))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        samples = data_batch["data_samples"]
        indices = [int(s.metainfo["img_id"], 16) for s in samples]
        it = runner.iter + 1
        with open(self.out_dir / f"rank{runner.rank}.jsonl", "a") as fh:
            fh.write(json.dumps({"iter": it, "indices": indices}) + "\n")
        if runner.rank == self.stall_rank and it == self.stall_iter:
            tmp = self.out_dir / "stalled.tmp"
            tmp.write_text(str(os.getpid()))
            tmp.replace(self.out_dir / "stalled")
            time.sleep(3600)
