"""mmengine hooks of a training stage (registered as instances by
:func:`oidseg.train.train_stage`, so they need no registry entry).

- :class:`PlainCheckpointHook`: periodic checkpoints hold only tensors and
  plain data (mmengine's ``HistoryBuffer`` objects of the message hub and
  numpy scalars are converted on save and rebuilt on load), so that
  ``torch.load(weights_only=True)`` reads them with no allow-listed global;
  they also carry the random state (python, numpy, torch CPU and CUDA) of
  every rank, restored on resume, so that a resumed stage draws the same
  random numbers as an uninterrupted one (exact with ``--workers 0``;
  dataloader worker processes are re-seeded by mmengine when the iterator
  is rebuilt).
- :class:`LoadWeightsHook`: a new stage's starting weights (the previous
  stage's final weights, or ImageNet backbone weights), loaded strictly
  after mmengine's own weight initialisation and before the first
  iteration (:func:`oidseg.checkpoints.fit_state_dict`).
- :class:`NonFiniteLossHook`: a loss that stays NaN/inf for ``patience``
  consecutive iterations stops the stage with :class:`~oidseg.errors.StageError`
  naming the iterations (with AMP, a step the grad scaler skips has a finite
  loss and does not count); :class:`PlainCheckpointHook` refuses to save
  non-finite weights, so the newest periodic checkpoint stays a finite one.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer, print_log

from oidseg.checkpoints import BACKBONE_MAY_EXTRA, BACKBONE_MAY_MISS, fit_state_dict, nonfinite_tensors
from oidseg.errors import StageError

HISTORY_MARK = "__oidseg_history_buffer__"


def to_plain(obj: Any) -> Any:
    """``obj`` with HistoryBuffers, numpy arrays and numpy scalars replaced
    by plain data and tensors (dicts, OrderedDicts included, become dicts)."""
    if isinstance(obj, HistoryBuffer):
        log, count = obj.data
        return {HISTORY_MARK: 1, "log": torch.from_numpy(np.array(log, dtype=np.float64)),
                "count": torch.from_numpy(np.array(count, dtype=np.int64)),
                "max_length": int(obj.max_length)}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    return obj


def from_plain(obj: Any) -> Any:
    """Rebuild the HistoryBuffers of :func:`to_plain`."""
    if isinstance(obj, dict):
        if obj.get(HISTORY_MARK) == 1:
            return HistoryBuffer(obj["log"].numpy(), obj["count"].numpy(), obj["max_length"])
        return {k: from_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(from_plain(v) for v in obj)
    return obj


def rng_state() -> dict:
    """This process's random state as plain data and tensors."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": np_state["key"].numpy().astype(np.uint32),
                                   "pos": np_state["pos"]},
                         "has_gauss": np_state["has_gauss"], "gauss": np_state["gauss"]})
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


class PlainCheckpointHook(Hook):
    """Plain-data periodic checkpoints with every rank's random state.

    ``interval``: the checkpoint interval (the states are gathered, on every
    rank, on the iterations a checkpoint is saved, before mmengine's
    ``CheckpointHook`` saves it on rank 0).
    """

    priority = "NORMAL"  # before CheckpointHook (VERY_LOW) in after_train_iter

    def __init__(self, interval: int) -> None:
        self.interval = max(1, int(interval))
        self._states: list | None = None
        self._states_iter = -1
        self._resumed: list | None = None
        self._resumed_iter = -1

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if self.every_n_train_iters(runner, self.interval) or self.is_last_train_iter(runner):
            from mmengine.dist import all_gather_object

            self._states = all_gather_object(rng_state())
            self._states_iter = runner.iter + 1

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        bad = nonfinite_tensors(checkpoint.get("state_dict", {}))
        if bad:
            raise StageError(
                f"iteration {runner.iter + 1}: the weights hold NaN/inf in {len(bad)} tensors "
                f"({', '.join(bad[:3])}, ...): the training diverged; this periodic checkpoint was "
                f"not saved (the newest one in {runner.work_dir} is from before), no final "
                "checkpoint was written")
        for key in ("meta", "message_hub", "param_schedulers", "optimizer"):
            if key in checkpoint:
                checkpoint[key] = to_plain(checkpoint[key])
        if self._states is not None and self._states_iter == checkpoint["meta"].get("iter"):
            checkpoint["meta"]["rng_states"] = self._states

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if "message_hub" in checkpoint:
            checkpoint["message_hub"] = from_plain(checkpoint["message_hub"])
        meta = checkpoint.get("meta", {})
        self._resumed = meta.pop("rng_states", None)
        self._resumed_iter = int(meta.get("iter", -1))

    def before_train(self, runner) -> None:
        if self._resumed is None:
            return
        if len(self._resumed) != runner.world_size:
            print_log(f"checkpoint holds the random state of {len(self._resumed)} processes, this run "
                      f"has {runner.world_size}: random state not restored", logger="current")
        else:
            set_rng_state(self._resumed[runner.rank])
            print_log(f"restored the random state of iteration {self._resumed_iter}", logger="current")
        self._resumed = None


class LoadWeightsHook(Hook):
    """Load a new stage's starting weights strictly, before the first iteration.

    ``backbone=True``: ImageNet weights into ``model.backbone`` (a missing
    DCN offset or BN counter and an extra classifier are allowed).
    """

    priority = "VERY_HIGH"

    def __init__(self, state: dict, path: str, what: str, backbone: bool = False) -> None:
        self.state, self.path, self.what, self.backbone = state, str(path), what, backbone

    def before_train(self, runner) -> None:
        if self.state is None:
            return
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        if self.backbone:
            fit_state_dict(model.backbone, self.state, self.path, what=f"the backbone of {self.what}",
                           may_miss=BACKBONE_MAY_MISS, may_extra=BACKBONE_MAY_EXTRA)
        else:
            fit_state_dict(model, self.state, self.path, what=self.what)
        print_log(f"loaded {'backbone ' if self.backbone else ''}weights from {self.path}",
                  logger="current")
        self.state = None


class NonFiniteLossHook(Hook):
    """Stop a stage whose loss stays non-finite for ``patience`` consecutive
    iterations (``training.nonfinite_patience``), before any checkpoint of
    that iteration is saved."""

    priority = "HIGH"  # after_train_iter: before the logger and checkpoint hooks

    def __init__(self, patience: int) -> None:
        self.patience = max(1, int(patience))
        self.run = 0
        self.first = None

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        loss = (outputs or {}).get("loss")
        if loss is None:
            return
        value = float(loss.detach()) if hasattr(loss, "detach") else float(loss)
        if math.isfinite(value):
            self.run, self.first = 0, None
            return
        self.run += 1
        self.first = self.first or runner.iter + 1
        if self.run >= self.patience:
            raise StageError(
                f"iteration {runner.iter + 1}: the loss has been {value} for {self.run} consecutive "
                f"iterations (since iteration {self.first}): the training diverged (a learning rate "
                f"too high for this model?). Periodic checkpoints with finite weights stay in "
                f"{runner.work_dir}; no final checkpoint was written")
