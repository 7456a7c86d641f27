"""OrderedListSampler: list order, rank split, skip, resume start, wrap, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from oidseg.errors import InputError
from oidseg.mmdet_ext import sampler as sampler_mod
from oidseg.mmdet_ext.sampler import OrderedListSampler


def make_sampler(tmp_path, monkeypatch, order, dataset_size=10, rank=0, world=1, skip=0):
    path = tmp_path / "order.npy"
    np.save(path, np.asarray(order))
    monkeypatch.setattr(sampler_mod, "get_dist_info", lambda: (rank, world))
    return OrderedListSampler(list(range(dataset_size)), order_file=str(path), skip=skip)


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


ORDER = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9]


def test_single_rank_follows_the_list_without_shuffling(tmp_path, monkeypatch):
    s = make_sampler(tmp_path, monkeypatch, ORDER)
    assert take(s, len(ORDER)) == ORDER
    s.set_epoch(5)  # the order does not depend on the epoch
    assert take(s, len(ORDER)) == ORDER


@pytest.mark.parametrize("world", [2, 3, 4])
def test_rank_r_takes_entries_r_plus_k_times_world(tmp_path, monkeypatch, world):
    per_rank = []
    for rank in range(world):
        s = make_sampler(tmp_path, monkeypatch, ORDER, rank=rank, world=world)
        got = take(s, len(ORDER) // world)
        assert got == ORDER[rank::world][: len(got)]
        per_rank.append(got)
    # interleaving the ranks gives back the list
    merged = [per_rank[i % world][i // world] for i in range(world * (len(ORDER) // world))]
    assert merged == ORDER[: len(merged)]


def test_skip_drops_the_entries_of_earlier_stages(tmp_path, monkeypatch):
    # 2 ranks, earlier stages consumed 3 iterations x 2 images = 6 entries
    r0 = make_sampler(tmp_path, monkeypatch, ORDER, rank=0, world=2, skip=6)
    r1 = make_sampler(tmp_path, monkeypatch, ORDER, rank=1, world=2, skip=6)
    assert take(r0, 4) == [ORDER[6], ORDER[8], ORDER[10], ORDER[12]]
    assert take(r1, 4) == [ORDER[7], ORDER[9], ORDER[11], ORDER[13]]


def test_resume_start_continues_where_the_run_stopped(tmp_path, monkeypatch):
    s = make_sampler(tmp_path, monkeypatch, ORDER, rank=1, world=2, skip=2)
    uninterrupted = take(s, 6)
    s.set_start(4)  # 2 iterations x 2 images per GPU
    assert take(s, 2) == uninterrupted[4:6]


def test_exhausted_list_wraps_to_its_start(tmp_path, monkeypatch):
    s = make_sampler(tmp_path, monkeypatch, ORDER, skip=12)
    assert take(s, 3 + len(ORDER) + 1) == ORDER[12:] + ORDER + ORDER[:1]
    assert len(s) == 3


def test_bad_lists_name_the_file(tmp_path, monkeypatch):
    with pytest.raises(InputError, match=r"order.npy: entry 2 = 10 is not an index"):
        make_sampler(tmp_path, monkeypatch, [0, 1, 10, 2])
    with pytest.raises(InputError, match="1-D integer"):
        make_sampler(tmp_path, monkeypatch, [[0, 1], [2, 3]])
    with pytest.raises(InputError, match="1-D integer"):
        make_sampler(tmp_path, monkeypatch, [0.0, 1.0])
    with pytest.raises(InputError, match="empty"):
        make_sampler(tmp_path, monkeypatch, np.zeros(0, np.int64))
    with pytest.raises(InputError, match="missing"):
        OrderedListSampler(list(range(3)), order_file=str(tmp_path / "nope.npy"))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(InputError, match="junk.npy"):
        OrderedListSampler(list(range(3)), order_file=str(tmp_path / "junk.npy"))
