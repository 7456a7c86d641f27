"""Re-balanced ordered training lists (SPEC section 4) on hand-made datasets."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from oidseg.errors import InputError
from oidseg.rebalance import (
    ImageLabels,
    LeafListParams,
    OversampledListParams,
    ParentListParams,
    build_list,
    consumed_entries,
    image_labels_from_dataset,
    image_labels_from_pairs,
    order_round,
    params_from_strings,
    rank_classes,
    scale_boundary,
    skip_consumed,
)

def _load_script(name: str):
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_lists = _load_script("build_lists")


def dataset(images: list[list[int]], n_classes: int, test: set[int] = frozenset(),
            prefix: str = "/m/c") -> ImageLabels:
    pairs = [(i, lab) for i, labs in enumerate(images) for lab in labs]
    img = np.array([p[0] for p in pairs], dtype=np.int64)
    lab = np.array([p[1] for p in pairs], dtype=np.int64)
    is_test = np.array([i in test for i in range(len(images))])
    return image_labels_from_pairs(img, lab, is_test, [f"{prefix}{k}" for k in range(n_classes)])


def per_image(order: np.ndarray, n_images: int) -> np.ndarray:
    return np.bincount(order, minlength=n_images)


def leaf4(**kw) -> LeafListParams:
    """4 classes, no scaling: rank 3 rare, rank 2 middle, rank 1 >= 1, rank 0 top."""
    base = dict(rounds=(2, 2), reference_n_classes=4, rare_from=3, middle_from=2, ge1_from=1,
                middle_target=17, top_target=7, top_target_if_negative=4)
    base.update(kw)
    return LeafListParams(**base)


# class 0: images 0..19 (rank 0), class 1: 20..29 (rank 1),
# class 2: 30..34 (rank 2), class 3: 35, 36 (rank 3)
BASIC = [[0]] * 20 + [[1]] * 10 + [[2]] * 5 + [[3]] * 2


def test_each_rule_on_a_plain_dataset():
    data = dataset(BASIC, 4)
    result = build_list(data, leaf4())
    c = per_image(result.order, data.n_images)
    assert list(result.ranked) == [0, 1, 2, 3]
    assert list(c[35:37]) == [10, 10]  # rarest: 10 each
    mid = c[30:35]  # 17 over 5 images: 3 each, 2 random ones +1
    assert sorted(mid) == [3, 3, 3, 4, 4] and mid.sum() == 17
    assert list(c[20:30]) == [1] * 10  # >= 1
    top = c[0:20]  # 7 random images get 1
    assert set(top) <= {0, 1} and top.sum() == 7
    assert result.order.size == 20 + 17 + 10 + 7
    assert result.class_entries[0].tolist() == [7, 10, 17, 20]


def test_middle_top_up_counts_what_rarer_classes_already_gave():
    images = [list(x) for x in BASIC]
    images[35] = [3, 2]  # a rare-class image (count 10) also holds class 2
    data = dataset(images, 4)
    c = per_image(build_list(data, leaf4()).order, data.n_images)
    # target 17 - 10 = 7 over the 5 uncounted images: 1 each, 2 random get +1
    mid = c[30:35]
    assert sorted(mid) == [1, 1, 1, 2, 2]
    assert c[35] == 10


def test_middle_negative_target_is_skipped():
    images = [list(x) for x in BASIC]
    images[35] = [3, 2]
    data = dataset(images, 4)
    c = per_image(build_list(data, leaf4(middle_target=5)).order, data.n_images)
    assert list(c[30:35]) == [0] * 5  # 5 - 10 < 0: class skipped


def test_top_negative_target_uses_fallback_and_never_exceeds_free_images():
    images = [list(x) for x in BASIC]
    images[0] = [0, 3]  # class 0 already carries 10
    data = dataset(images, 4)
    c = per_image(build_list(data, leaf4(top_target=3, top_target_if_negative=4)).order,
                  data.n_images)
    assert c[0] == 10
    assert c[1:20].sum() == 4 and set(c[1:20]) <= {0, 1}
    c = per_image(build_list(data, leaf4(top_target=1000)).order, data.n_images)
    assert list(c[1:20]) == [1] * 19  # target > free images: every free one once


def test_cap_stops_the_middle_group():
    # 5 classes, ranks 3..2 middle: class 3 (5 images, rank 3), class 2 (12 images, rank 2)
    images = [[0]] * 30 + [[1]] * 20 + [[2]] * 12 + [[3]] * 5 + [[4]] * 2
    data = dataset(images, 5)
    params = LeafListParams(rounds=(2, 2), reference_n_classes=5, rare_from=4, middle_from=2,
                            ge1_from=1, middle_target=51, top_target=0, top_target_if_negative=0)
    result = build_list(data, params)
    c = per_image(result.order, data.n_images)
    # 51 / 5 = 10 r 1 -> one image gets 11 > 10. The original writes the counts
    # (10, 10, 10, 10, 11), then stops the middle group: class 2 is not topped up.
    # Its ordering places only counts 1..10: the count-11 image is not in the round.
    assert result.cap_stops == [3]
    assert sorted(c[62:67]) == [0, 10, 10, 10, 10]
    assert result.class_entries[0, 3] == 40
    assert c[50:62].sum() == 0
    assert list(c[67:69]) == [10, 10]
    assert list(c[30:50]) == [1] * 20  # later groups still run
    # exactly at the cap is allowed: 50 / 5 = 10 each, then class 2 gets 50 / 12
    result = build_list(data, dataclasses.replace(params, middle_target=50))
    c = per_image(result.order, data.n_images)
    assert result.cap_stops == [None]
    assert list(c[62:67]) == [10] * 5
    assert sorted(c[50:62]) == [4] * 10 + [5] * 2
    assert c.max() == 10


def test_cap_class_of_two_images_target_21_keeps_its_writes():
    # issue 12's case: a middle class of 2 images with a target of 21:
    # 21 // 2 = 10, 21 % 2 = 1 -> counts 10 and 11 are written, then the group
    # stops; the count-10 image is placed 10 times, the count-11 one not at all
    # (the original's ordering places counts 1..10). Class entries: 10 (not 0).
    images = [[0]] * 30 + [[1]] * 2 + [[2]] * 1
    data = dataset(images, 3)
    # rank 2 = class 2 (rare: 10), rank 1 = class 1 (middle), rank 0 = class 0 (>= 1)
    params = LeafListParams(rounds=(2, 2), reference_n_classes=3, rare_from=2, middle_from=1,
                            ge1_from=0, middle_target=21)
    result = build_list(data, params)
    c = per_image(result.order, data.n_images)
    assert result.cap_stops == [1]
    assert sorted(c[30:32]) == [0, 10]
    assert result.class_entries[0, 1] == 10
    assert c[32] == 10


def test_middle_cap_count_still_counts_for_later_groups():
    # class 2 (middle, 2 images 30, 31) hits the cap with 21 -> counts 10, 11.
    # Both images also hold class 0 (top, target 25): its sum already has 21,
    # so 25 - 21 = 4 of its 28 free images get 1 (the count-11 image is not
    # free and is dropped from the round at the end).
    images = [[0]] * 28 + [[0, 2]] * 2 + [[1]] * 3
    data = dataset(images, 3)
    params = LeafListParams(rounds=(2, 2), reference_n_classes=3, rare_from=3, middle_from=1,
                            ge1_from=1, middle_target=21, top_target=25)
    result = build_list(data, params)
    c = per_image(result.order, data.n_images)
    assert list(result.ranked) == [0, 1, 2]
    # rank 2 = class 2: 21 over 2 -> 10 and 11 -> stop; rank 1 (class 1) not topped up
    assert result.cap_stops == [2]
    assert sorted(c[28:30]) == [0, 10] and c[30:33].sum() == 0
    assert c[0:28].sum() == 4 and set(c[0:28]) <= {0, 1}


def parent_data(stop_rank_class: int) -> tuple[ImageLabels, list[str]]:
    images = [[0]] * 40 + [[1]] * 20 + [[2]] * 6
    mids = ["/m/a", "/m/b", "/m/c"]
    mids[stop_rank_class] = "/m/01g317"
    pairs = [(i, lab) for i, labs in enumerate(images) for lab in labs]
    data = image_labels_from_pairs(np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]),
                                   np.zeros(len(images), bool), mids)
    return data, mids


def parent3(**kw) -> ParentListParams:
    base = dict(rounds=(1, 1), reference_n_classes=3, middle_from=2, ge1_from=1,
                middle_target=12, top_target=9, top_target_if_negative=2)
    base.update(kw)
    return ParentListParams(**base)


def test_stop_at_class_is_never_explicitly_sampled():
    data, _ = parent_data(stop_rank_class=0)  # Person is the most frequent class (rank 0)
    result = build_list(data, parent3())
    c = per_image(result.order, data.n_images)
    assert c[:40].sum() == 0  # Person: never sampled
    assert list(c[40:60]) == [1] * 20 and list(c[60:66]) == [2] * 6
    assert result.stop_at_class_found is True
    c = per_image(build_list(data, parent3(stop_at_class=None)).order, data.n_images)
    assert c[:40].sum() == 9
    # at another rank only that class is held back
    data, _ = parent_data(stop_rank_class=2)
    c = per_image(build_list(data, parent3()).order, data.n_images)
    assert c[60:66].sum() == 0 and list(c[40:60]) == [1] * 20 and c[:40].sum() == 9
    # a MID that is not a class changes nothing
    result = build_list(data, parent3(stop_at_class="/m/nothing"))
    assert result.stop_at_class_found is False
    assert list(per_image(result.order, data.n_images)[60:66]) == [2] * 6


def test_parent_person_images_appear_through_other_classes():
    images = [[0]] * 40 + [[1]] * 20 + [[2]] * 6
    images[0] = [0, 1]  # a Person image that also holds class 1
    data = image_labels_from_pairs(
        np.array([i for i, ls in enumerate(images) for _ in ls]),
        np.array([lab for ls in images for lab in ls]), np.zeros(66, bool),
        ["/m/01g317", "/m/b", "/m/c"])
    c = per_image(build_list(data, parent3()).order, 66)
    assert c[0] == 1 and c[1:40].sum() == 0


def test_oversampled_treats_train_and_v5test_differently():
    # class 0 (rank 0): 30 train 0..29 + 4 test 30..33; class 1 (rank 1): 10 train + 2 test;
    # class 2 (rank 2, middle): 6 train 46..51 + 2 test 52,53; class 3 (rank 3): 2 train + 1 test
    images = ([[0]] * 34 + [[1]] * 12 + [[2]] * 8 + [[3]] * 3)
    test = {30, 31, 32, 33, 44, 45, 52, 53, 56}
    data = dataset(images, 4, test)
    params = OversampledListParams(rounds=(9, 9), reference_n_classes=4, rare_from=3,
                                   middle_from=2, ge1_from=1, middle_target=30,
                                   middle_target_if_negative=3, top_target=10,
                                   top_target_if_negative=2)
    c = per_image(build_list(data, params).order, data.n_images)
    assert list(c[54:56]) == [8, 8] and c[56] == 10  # rarest: train 8, test 10
    assert list(c[52:54]) == [5, 5]  # middle: test 5 first
    assert sorted(c[46:52]) == [3, 3, 3, 3, 4, 4]  # 30 - 10 = 20 over 6 train: 3 r 2
    assert list(c[34:46]) == [1] * 12  # >= 1, train and test
    assert list(c[30:34]) == [1] * 4  # top: test >= 1
    assert c[0:30].sum() == 6 and set(c[0:30]) <= {0, 1}  # 10 - 4 = 6 train images
    # negative targets: middle falls back to 3, top to 2
    params2 = dataclasses.replace(params, middle_target=5, top_target=1)
    c = per_image(build_list(data, params2).order, data.n_images)
    assert sorted(c[46:52]) == [0, 0, 0, 1, 1, 1]
    assert c[0:30].sum() == 2


def test_leaf_list_ignores_v5test_images_also_for_ranking():
    # class 1 has more images than class 0 only through test images
    images = [[0]] * 6 + [[1]] * 4 + [[1]] * 5
    data = dataset(images, 2, test=set(range(10, 15)))
    params = LeafListParams(rounds=(2, 2), reference_n_classes=2, rare_from=2, middle_from=2,
                            ge1_from=1, top_target=100)
    result = build_list(data, params)
    assert list(result.ranked) == [0, 1]
    assert result.order.max() < 10
    assert list(per_image(result.order, 15)[:10]) == [1] * 10
    over = build_list(data, OversampledListParams(rounds=(9, 9), reference_n_classes=2,
                                                  rare_from=2, middle_from=2, ge1_from=1))
    assert list(over.ranked) == [0, 1]  # the oversampled list ranks by train images too
    assert list(per_image(over.order, 15)) == [1] * 15


def test_oversampled_list_ranks_classes_by_train_images_only():
    # class 0: 6 train images (0..5); class 1: 4 train (6..9) + 5 V5-test (10..14);
    # class 2: 2 V5-test images only (15, 16). The original ranks by
    # tr_leaves_nodup.cat.value_counts(): class 0 (6) rank 0, class 1 (4) rank 1;
    # class 2 has no train image and is not ranked at all (no rule).
    # Rank 0 top (target 5000: all 6 free train images once), rank >= 1 rare
    # (train 8, test 10). Counting test images too would rank class 1 (9) first.
    images = [[0]] * 6 + [[1]] * 9 + [[2]] * 2
    data = dataset(images, 3, test=set(range(10, 17)))
    params = OversampledListParams(rounds=(9, 9), reference_n_classes=3, rare_from=1,
                                   middle_from=1, ge1_from=1)
    result = build_list(data, params)
    assert list(result.ranked[:2]) == [0, 1]
    assert list(result.class_images) == [6, 4, 0]
    c = per_image(result.order, data.n_images)
    assert list(c) == [1] * 6 + [8] * 4 + [10] * 5 + [0, 0]


def test_oversampled_middle_test_count_is_set_before_the_loop():
    # The original sets EVERY test image of every middle class to 5 before the
    # middle loop (an assignment): also one already at 10 from a rare class,
    # and also in a class after the one where the cap stops.
    # class 3 (rare, rank 3): train 0, test 1; class 2 (middle, rank 2): train
    # 2, 3 + test 1 (shared with class 3) -> 1 is set to 5; target 25 - 5 = 20
    # over 2 free -> 10, 10 (no cap); class 1 (middle, rank 1): train 4, 12, test 5;
    # class 0 (top, rank 0): train 6..11. Class 1 has a second train image (12).
    images = [[3], [3, 2], [2], [2], [1], [1], [0], [0], [0], [0], [0], [0], [1]]
    data = dataset(images, 4, test={1, 5})
    params = OversampledListParams(rounds=(9, 9), reference_n_classes=4, rare_from=3,
                                   middle_from=1, ge1_from=1, middle_target=25,
                                   middle_target_if_negative=3, top_target=2)
    result = build_list(data, params)
    # train images per class: 0: 6, 1: 2 (4, 12), 2: 2 (2, 3), 3: 1 (0)
    assert list(result.ranked) == [0, 1, 2, 3]
    c = per_image(result.order, data.n_images)
    assert c[0] == 8 and c[1] == 5  # rare: train 8; the test image's 10 is SET to 5
    assert list(c[2:4]) == [10, 10]  # class 2: 25 - 5 = 20 over 2 -> 10 each
    assert c[5] == 5  # class 1's test image: 5 (set before the loop)
    # class 1: 25 - 5 = 20 over train images 4, 12 -> 10 each
    assert c[4] == 10 and c[12] == 10


def test_rank_ties_go_to_the_lower_class_index():
    assert list(rank_classes(np.array([3, 5, 3, 5, 0]))) == [1, 3, 0, 2, 4]


def check_chunks(order: np.ndarray, counts: np.ndarray, max_count: int = 10) -> None:
    """Each count-c image sits once in each of the c chunks of its insertion step,
    and insertion keeps the relative order of the entries already there."""
    assert np.array_equal(np.bincount(order, minlength=counts.size), counts)
    for c in range(2, max_count + 1):
        if not (counts == c).any():
            continue
        after = order[counts[order] <= c]
        before = order[counts[order] < c]
        m, k = before.size, int((counts == c).sum())
        size = -(-m // c)
        old = [min(max(m - j * size, 0), size) for j in range(c)]
        bounds = np.cumsum([0] + [e + k for e in old])
        for j in range(c):
            chunk = after[bounds[j]:bounds[j + 1]]
            new = chunk[counts[chunk] == c]
            assert sorted(new) == sorted(np.flatnonzero(counts == c))
        assert np.array_equal(after[counts[after] < c], before)


def test_order_spreads_a_count_c_image_once_per_chunk():
    rng = np.random.default_rng(0)
    counts = rng.choice(np.arange(11), size=400, p=[0.2, 0.35] + [0.05] * 9)
    order = order_round(counts, np.random.default_rng(1))
    check_chunks(order, counts)
    # only count-c images: c consecutive random permutations
    counts = np.array([0, 3, 3, 3, 0])
    order = order_round(counts, np.random.default_rng(2))
    assert order.size == 9
    for j in range(3):
        assert sorted(order[3 * j:3 * j + 3]) == [1, 2, 3]


def test_full_rounds_respect_the_chunk_rule():
    images = [[0]] * 200 + [[1]] * 60 + [[2]] * 20 + [[3]] * 5
    data = dataset(images, 4)
    params = leaf4(middle_target=90, top_target=50)
    result = build_list(data, params)
    counts = per_image(result.order, data.n_images)
    assert set(counts[280:285]) == {10} and set(counts[260:280]) == {4, 5}
    check_chunks(result.order, counts)


def test_determinism_and_rounds():
    images = [[0]] * 200 + [[1]] * 60 + [[2]] * 20 + [[3]] * 5
    data = dataset(images, 4)
    a = build_list(data, leaf4(rounds=(2, 4), middle_target=90, top_target=50))
    b = build_list(data, leaf4(rounds=(2, 4), middle_target=90, top_target=50))
    assert np.array_equal(a.order, b.order)
    parts = [build_list(data, leaf4(rounds=(r, r), middle_target=90, top_target=50)).order
             for r in (2, 3, 4)]
    assert np.array_equal(a.order, np.concatenate(parts))
    assert a.round_lengths.tolist() == [p.size for p in parts]
    assert not np.array_equal(parts[0], parts[1])  # another round, another order
    # another sampling seed changes which top images are drawn
    c2 = per_image(parts[0], data.n_images)
    c3 = per_image(parts[1], data.n_images)
    assert not np.array_equal(c2[:200], c3[:200])
    assert a.order.dtype == np.int64


def test_boundaries_scale_with_the_number_of_classes():
    assert [scale_boundary(b, 275, 275) for b in (241, 64, 24)] == [241, 64, 24]
    assert [scale_boundary(b, 10, 275) for b in (241, 64, 24)] == [9, 2, 1]
    assert [scale_boundary(b, 23, 23) for b in (10, 5)] == [10, 5]
    assert [scale_boundary(b, 4, 23) for b in (10, 5)] == [2, 1]
    assert scale_boundary(1, 2, 4) == 1  # 0.5 rounds up
    data = dataset([[k] for k in range(10) for _ in range(10 - k)], 10)
    result = build_list(data, LeafListParams(rounds=(2, 2)))
    assert result.boundaries == {"rare_from": 9, "middle_from": 2, "ge1_from": 1}
    # rank 9 = class 9 (1 image) is rare: count 10
    assert per_image(result.order, data.n_images)[-1] == 10


def test_skip_consumed():
    order = np.arange(10, dtype=np.int64)
    assert skip_consumed(order, consumed_entries(2, 3)).tolist() == [6, 7, 8, 9]
    assert skip_consumed(order, 0).tolist() == order.tolist()
    assert skip_consumed(order, 10).size == 0
    with pytest.raises(ValueError, match="only 10"):
        skip_consumed(order, 11)


def test_params_from_strings():
    p = params_from_strings("parent", {"rounds": "3,4", "middle_target": "50",
                                       "stop_at_class": "none"})
    assert p.rounds == (3, 4) and p.middle_target == 50 and p.stop_at_class is None
    assert params_from_strings("leaf", {}) == LeafListParams()
    with pytest.raises(InputError, match="unknown parameter"):
        params_from_strings("leaf", {"rare_count_test": "3"})
    with pytest.raises(InputError, match="exceeds max_count"):
        params_from_strings("leaf", {"rare_count": "11"})


def write_inputs(tmp_path, records, classes=("/m/a", "/m/b")):
    ann = {"metainfo": {"classes": list(classes), "names": list(classes)}, "data_list": records}
    pkl = tmp_path / "leaf_train.pkl"
    pkl.write_bytes(pickle.dumps(ann))
    cj = tmp_path / "classes.json"
    cj.write_text(json.dumps({"leaf_classes": list(classes), "parent_classes": []}))
    return pkl, cj


def record(i, labels, source="train"):
    return {"img_id": f"img{i}", "img_path": f"x/img{i}.jpg", "width": 10, "height": 10,
            "source": source, "mask_dir": "m",
            "instances": [{"bbox": [0.0, 0.0, 1.0, 1.0], "bbox_label": lab,
                           "mask_file": "f.png", "ignore_flag": 0} for lab in labels]}


def test_cli_writes_the_list(tmp_path, capsys):
    records = [record(i, [0, 0]) for i in range(6)] + [record(6, [1]), record(7, [1], "v5test")]
    pkl, cj = write_inputs(tmp_path, records)
    out = tmp_path / "lists" / "leaf.npy"
    build_lists.main(["--ann", str(pkl), "--kind", "leaf", "--classes-json", str(cj),
                      "--out", str(out), "--param", "rounds=2,3", "--param", "middle_target=8"])
    order = np.load(out)
    assert order.dtype == np.int64
    # 2 classes scale to rare_from 2, middle_from 0, ge1_from 0: both are middle
    # rank 1 (class 1, image 6): 8; rank 0 (class 0, images 0..5): 8 -> 1 each, 2 get +1
    assert order.size == 2 * 16 and 7 not in order
    assert sorted(np.bincount(order[:16])) == [1, 1, 1, 1, 2, 2, 8]
    err = capsys.readouterr().err
    assert "round 2: 16 entries" in err and "/m/b" in err
    data = image_labels_from_dataset(pickle.loads(pkl.read_bytes()), pkl)
    assert data.labels.tolist() == [0] * 6 + [1, 1] and data.is_test.tolist()[-1]


@pytest.mark.parametrize(
    "records, message",
    [
        ([record(0, [0]), record(1, [5])], "record 1 (img1): bbox_label 5 is outside"),
        ([record(0, [0]), record(1, [1], "test")], "record 1 (img1): source 'test'"),
        ([record(0, [0]), {"img_id": "x", "source": "train"}], "record 1 (x): missing 'instances'"),
    ],
)
def test_cli_rejects_bad_input_without_output(tmp_path, records, message):
    pkl, cj = write_inputs(tmp_path, records)
    out = tmp_path / "leaf.npy"
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_lists.main(["--ann", str(pkl), "--kind", "leaf", "--classes-json", str(cj),
                          "--out", str(out)])
    assert not out.exists()
    assert build_lists.run_cli(build_lists.main, ["--ann", str(pkl), "--kind", "leaf",
                                                  "--classes-json", str(cj),
                                                  "--out", str(out)]) == 2


def test_cli_rejects_a_class_list_mismatch(tmp_path):
    pkl, cj = write_inputs(tmp_path, [record(0, [0])])
    with pytest.raises(InputError, match="parent_classes"):
        build_lists.main(["--ann", str(pkl), "--kind", "parent", "--classes-json", str(cj),
                          "--out", str(tmp_path / "p.npy")])
