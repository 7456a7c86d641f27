"""Ordered, non-shuffling training sampler over the re-balanced list.

SPEC section 4: the training order is a precomputed list of indices into the
annotation pickle's ``data_list`` (``results/annotations/lists/*.npy``),
consumed in order, without shuffling, by a distributed sampler in which rank
``r`` of ``W`` takes the list entries ``r, r + W, r + 2W, ...``.

Stream model. The sampler sees the list as one infinite stream of global
positions ``skip, skip + 1, ...``; position ``p`` is the data index
``order[p % len(order)]``. Rank ``r`` takes the positions
``skip + r + k * W`` for ``k = start, start + 1, ...``:

- ``skip``: entries already consumed by earlier training stages
  (iterations x images per iteration, counted over all ranks);
- ``start``: per-rank entries already consumed by this stage before a resume
  (iterations x images per GPU; set by :class:`OrderedIterBasedTrainLoop`);
- wrap-around: when the list is exhausted the stream continues from entry 0
  of the list (not from ``skip``), i.e. the list repeats; the iterator never
  ends, so ``IterBasedTrainLoop`` never restarts the dataloader.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, Sized

import numpy as np
from mmengine.dist import get_dist_info
from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop
from mmengine.runner.loops import _InfiniteDataloaderIterator
from torch.utils.data import Sampler

from mmdet.registry import DATA_SAMPLERS, LOOPS
from oidseg.errors import InputError


def load_order(order_file: str | Path, dataset_size: int) -> np.ndarray:
    """Read a re-balanced list (.npy of int indices) and check every entry is
    a valid index into a data_list of ``dataset_size`` records."""
    path = Path(order_file)
    try:
        order = np.load(path, allow_pickle=False)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: training list file is missing") from exc
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: training list is not a readable .npy file ({exc})") from exc
    if order.ndim != 1 or not np.issubdtype(order.dtype, np.integer):
        raise InputError(
            f"{path}: training list must be a 1-D integer array, got shape "
            f"{order.shape} dtype {order.dtype}")
    if order.size == 0:
        raise InputError(f"{path}: training list is empty")
    bad = np.flatnonzero((order < 0) | (order >= dataset_size))
    if bad.size:
        raise InputError(
            f"{path}: entry {int(bad[0])} = {int(order[bad[0]])} is not an index into "
            f"the dataset's {dataset_size} images ({bad.size} bad entries)")
    return order.astype(np.int64, copy=False)


def rank_positions(skip: int, start: int, count: int, rank: int, world_size: int) -> np.ndarray:
    """Global stream positions of the next ``count`` samples of ``rank``."""
    k = np.arange(start, start + count, dtype=np.int64)
    return skip + rank + k * world_size


@DATA_SAMPLERS.register_module()
class OrderedListSampler(Sampler):
    """Follow the ordered re-balanced list; split across ranks; skip the
    entries of earlier stages; infinite (wraps to the list's start).

    Args:
        dataset: the training dataset (only its length is used).
        order_file: .npy of indices into the dataset's data_list.
        skip: global entries consumed by earlier stages (>= 0).
        seed: unused (the order is fixed); accepted for config compatibility.
    """

    CHUNK = 4096

    def __init__(self, dataset: Sized, order_file: str | Path | None, skip: int = 0,
                 seed: int | None = None) -> None:
        if order_file is None:
            raise InputError("OrderedListSampler: no training list given (order_file=None)")
        if int(skip) < 0:
            raise InputError(f"{order_file}: skip must be >= 0, got {skip}")
        self.order_file = str(order_file)
        self.order = load_order(order_file, len(dataset))
        self.skip = int(skip)
        self.rank, self.world_size = get_dist_info()
        self.start = 0

    def set_start(self, consumed_per_rank: int) -> None:
        """Resume: this rank already consumed ``consumed_per_rank`` samples of
        this stage (iterations x images per GPU)."""
        self.start = int(consumed_per_rank)

    def set_epoch(self, epoch: int) -> None:
        """The order is fixed; nothing depends on the epoch."""

    def indices(self, count: int, start: int | None = None) -> np.ndarray:
        """The next ``count`` data indices of this rank from ``start``."""
        positions = rank_positions(self.skip, self.start if start is None else start,
                                   count, self.rank, self.world_size)
        return self.order[positions % self.order.size]

    def __iter__(self) -> Iterator[int]:
        start = self.start
        while True:
            for index in self.indices(self.CHUNK, start).tolist():
                yield index
            start += self.CHUNK

    def __len__(self) -> int:
        """Samples of this rank in one pass over the list after ``skip``."""
        remaining = max(self.order.size - self.skip, 0)
        return max(1, -(-(remaining - self.rank) // self.world_size))


@LOOPS.register_module()
class OrderedIterBasedTrainLoop(IterBasedTrainLoop):
    """``IterBasedTrainLoop`` whose resume moves the sampler instead of
    loading (and discarding) every already-trained batch.

    On resume at iteration ``i`` the stock loop calls ``next()`` on the
    dataloader ``i`` times. With an :class:`OrderedListSampler` this loop
    sets the sampler's start to ``i x batch size`` and restarts the
    iterator: the same data, without reading it.
    """

    def run(self):
        sampler = getattr(self.dataloader, "sampler", None)
        if self._iter == 0 or not isinstance(sampler, OrderedListSampler):
            return super().run()
        sampler.set_start(self._iter * self.dataloader.batch_size)
        print_log(
            f"Resume at iteration {self._iter}: the ordered list continues at "
            f"per-rank sample {sampler.start}", logger="current", level=logging.INFO)
        # restart the (possibly prefetching) iterator at the new start
        self.dataloader_iterator = _InfiniteDataloaderIterator(self.dataloader)
        self.runner.call_hook("before_train")
        self.runner.call_hook("before_train_epoch")
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            data_batch = next(self.dataloader_iterator)
            self.run_iter(data_batch)
            self._decide_current_val_interval()
            if (self.runner.val_loop is not None and self._iter >= self.val_begin
                    and (self._iter % self.val_interval == 0
                         or self._iter == self._max_iters)):
                self.runner.val_loop.run()
        self.runner.call_hook("after_train_epoch")
        self.runner.call_hook("after_train")
        return self.runner.model
