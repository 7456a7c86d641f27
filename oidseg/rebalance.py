"""Re-balanced, ordered training lists (SPEC section 4).

The seed replaced shuffling by a precomputed list of image indices per
"round" and trained with a non-shuffling sampler. This module builds the three
lists of the original, each an ``int64`` array of indices into the matching
annotation pickle's ``data_list`` with the rounds concatenated:

- ``leaf``             rounds 2..8, leaf pickle, V5-test images excluded;
- ``leaf_oversampled`` rounds 9..15, leaf pickle, train and V5-test images
                       sampled by different rules;
- ``parent``           rounds 1..10, parent pickle, every image alike
                       (SPEC says only "10 rounds"; 1..10 is config.yaml's
                       choice, a parameter like every other number).

Data model
    An image is "test" when its record's ``source == 'v5test'`` and "train"
    otherwise (train and validation). The core works on a compact
    representation, :class:`ImageLabels` (CSR arrays image -> sorted unique
    labels, plus the test flag); :func:`image_labels_from_dataset` converts a
    pickle's dict into it. The *pool* of a list is the set of images it may
    draw from: non-test images for ``leaf``, all images for the other two.

One round (``round`` = r)
    Two ``numpy.random.Generator`` objects (PCG64, ``np.random.default_rng``):
    ``default_rng(sample_seed_base + r)`` (100 + r) draws every random choice
    of the per-image counts, ``default_rng(shuffle_seed_base + r)`` (20 + r)
    every shuffle and insertion of the ordering step. Same data, params and
    round -> the same order, bit for bit.

    1. Ranking. Classes are ranked by the number of images that contain
       them, descending (rank 0 = most frequent); ties go to the lower class
       index first (``np.lexsort``). The ranking does not depend on the round.
       It counts the pool images, except for the oversampled list, which
       counts only its TRAIN images, as the original
       (``tr_leaves_nodup.cat.value_counts()``). A class with no image counted
       by the ranking gets no rule (the original's ``value_counts`` does not
       list it).
    2. Counts. Every pool image starts at count 0. The classes are walked
       group by group from the rarest rank (n-1) down to rank 0, applying the
       rule of the class's rank group to the class's pool images ("counted" =
       count > 0; "sum" = the sum of the counts already on the class's pool
       images):

       - rare   (rank >= rare_from): count = max(count, rare_count)
         (oversampled: train images rare_count_train, test rare_count_test);
       - middle (middle_from <= rank < rare_from): [oversampled: before the
         group's loop, every test image of every middle class is SET to
         middle_count_test (the original's assignment, which also lowers a
         rare class's 10)]; then per class from the rarest: target =
         middle_target - sum; if target < 0: skip the class (leaf, parent) or
         use middle_target_if_negative (oversampled); the n not-yet-counted
         (train) images each get target // n and target % n of them, drawn at
         random without replacement, get +1 (n = 0: nothing to spread).
         CAP, as the original (``if sampled.cnt.max() > 10: break`` after the
         writes): when that gives an image a count above max_count (10), the
         class's counts ARE written and the middle group stops there (no later,
         more frequent, middle class is topped up in this round); the pass goes
         on with the next groups, which see those counts. The original's
         ordering step places only counts 1..10, so an image left above
         max_count is not in the round (its count becomes 0 at the end).
       - at-least-one (ge1_from <= rank < middle_from): count = max(count, 1)
         for every pool image (train and test alike);
       - top    (rank < ge1_from): [oversampled: test images count =
         max(count, 1) first]; target = top_target - sum; if target < 0:
         target = top_target_if_negative; min(target, n) not-yet-counted
         (train) images drawn at random without replacement get count 1.

       ``stop_at_class`` (parent default: Person ``/m/01g317``): the seed's
       loop stopped when it reached Person, so Person was never explicitly
       sampled. Reproduced as: the pass applies no rule to that class (its
       images appear only through the other classes they contain); every
       other class is processed as usual. When Person is the most frequent
       parent (rank 0, the last class of the pass, as expected on the real
       data) this is exactly the seed's "loop stopped at Person"; on a small
       demo where that class may rank elsewhere it still affects only that
       class. A MID absent from
       the class list does nothing (the CLI warns).
    3. Order: the count-1 images are shuffled; then for c = 2..max_count the
       current list (length m) is split into c contiguous chunks of size
       s = ceil(m / c) (the last ones may be shorter or empty) and every
       count-c image is inserted once into every chunk at a random position:
       each output chunk is a uniformly random interleaving of the old chunk
       (kept in order) with a random permutation of the count-c images, which
       is what inserting them one by one at uniform positions gives. So an
       image of count c appears c times, once in each of the c chunks (an
       empty chunk becomes a random permutation of the count-c images).
The list = the rounds' orders concatenated in round order.

Rank boundaries scale with the number of classes n:
``scaled = floor(boundary * n / reference_n_classes + 1/2)`` (exact integer
arithmetic, :func:`scale_boundary`); the references are 275 (leaf) and 23
(parent), so the real data gets exactly 241/64/24 and 10/5. Targets and counts
are used as configured.

A later training stage skips the entries its predecessors consumed:
:func:`skip_consumed` (iterations x images per iteration, from the front).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from oidseg.errors import InputError

TEST_SOURCE = "v5test"
SOURCES = frozenset({"train", "validation", TEST_SOURCE})


# --------------------------------------------------------------------------
# parameters (one dataclass per list; defaults are the original's)


@dataclass(frozen=True)
class LeafListParams:
    """``leaf``: rounds 2..8, non-V5-test images, 275 reference classes."""

    rounds: tuple[int, int] = (2, 8)  # first, last (inclusive)
    reference_n_classes: int = 275
    rare_from: int = 241
    middle_from: int = 64
    ge1_from: int = 24
    rare_count: int = 10
    middle_target: int = 1500
    top_target: int = 6000
    top_target_if_negative: int = 1000
    max_count: int = 10
    shuffle_seed_base: int = 20
    sample_seed_base: int = 100
    stop_at_class: str | None = None


@dataclass(frozen=True)
class OversampledListParams:
    """``leaf_oversampled``: rounds 9..15, train and V5-test images."""

    rounds: tuple[int, int] = (9, 15)
    reference_n_classes: int = 275
    rare_from: int = 241
    middle_from: int = 64
    ge1_from: int = 24
    rare_count_train: int = 8
    rare_count_test: int = 10
    middle_count_test: int = 5
    middle_target: int = 1500
    middle_target_if_negative: int = 500
    top_target: int = 5000
    top_target_if_negative: int = 500
    max_count: int = 10
    shuffle_seed_base: int = 20
    sample_seed_base: int = 100
    stop_at_class: str | None = None


@dataclass(frozen=True)
class ParentListParams:
    """``parent``: 10 rounds, 23 reference classes, no rare group."""

    rounds: tuple[int, int] = (1, 10)
    reference_n_classes: int = 23
    middle_from: int = 10
    ge1_from: int = 5
    middle_target: int = 10_000
    top_target: int = 30_000
    top_target_if_negative: int = 5_000
    max_count: int = 10
    shuffle_seed_base: int = 20
    sample_seed_base: int = 100
    stop_at_class: str | None = "/m/01g317"


ListParams = LeafListParams | OversampledListParams | ParentListParams

PARAMS_BY_KIND: dict[str, type] = {
    "leaf": LeafListParams,
    "leaf_oversampled": OversampledListParams,
    "parent": ParentListParams,
}


@dataclass(frozen=True)
class _Rules:
    """The generic per-group rules one list reduces to (scaled boundaries)."""

    pool_has_test: bool  # test images in the pool
    split_test: bool  # test images follow their own rules
    rare_from: int
    middle_from: int
    ge1_from: int
    rare_count_train: int
    rare_count_test: int
    middle_count_test: int
    middle_target: int
    middle_target_if_negative: int | None  # None: skip the class
    top_count_test: int
    top_target: int
    top_target_if_negative: int
    max_count: int


def scale_boundary(boundary: int, n_classes: int, reference_n_classes: int) -> int:
    """``floor(boundary * n / ref + 1/2)`` in exact integer arithmetic."""
    return (2 * boundary * n_classes + reference_n_classes) // (2 * reference_n_classes)


def rounds_of(params: ListParams) -> list[int]:
    first, last = params.rounds
    return list(range(first, last + 1))


def validate_params(params: ListParams) -> None:
    """Raise :class:`InputError` naming the first inconsistent parameter."""
    name = type(params).__name__
    values = dataclasses.asdict(params)
    first, last = params.rounds
    if not (0 <= first <= last):
        raise InputError(f"{name}: rounds must be 'first,last' with 0 <= first <= last, got {params.rounds}")
    if params.max_count < 1:
        raise InputError(f"{name}: max_count must be >= 1, got {params.max_count}")
    if params.reference_n_classes < 1:
        raise InputError(f"{name}: reference_n_classes must be >= 1")
    bounds = [values.get("rare_from", params.reference_n_classes), params.middle_from, params.ge1_from]
    if not (params.reference_n_classes >= bounds[0] >= bounds[1] >= bounds[2] >= 0):
        raise InputError(
            f"{name}: rank boundaries must satisfy reference_n_classes >= rare_from >= "
            f"middle_from >= ge1_from >= 0, got {bounds} for {params.reference_n_classes}"
        )
    for key, value in values.items():
        if key in ("rounds", "stop_at_class"):
            continue
        if not isinstance(value, int) or value < 0:
            raise InputError(f"{name}: {key} must be a non-negative integer, got {value!r}")
        if key.startswith(("rare_count", "middle_count")) and value > params.max_count:
            raise InputError(f"{name}: {key}={value} exceeds max_count={params.max_count}")


def _rules_for(params: ListParams, n_classes: int) -> _Rules:
    validate_params(params)
    ref = params.reference_n_classes

    def scale(b: int) -> int:
        return scale_boundary(b, n_classes, ref)

    if isinstance(params, LeafListParams):
        return _Rules(
            pool_has_test=False, split_test=False,
            rare_from=scale(params.rare_from), middle_from=scale(params.middle_from),
            ge1_from=scale(params.ge1_from),
            rare_count_train=params.rare_count, rare_count_test=params.rare_count,
            middle_count_test=0, middle_target=params.middle_target,
            middle_target_if_negative=None, top_count_test=0,
            top_target=params.top_target, top_target_if_negative=params.top_target_if_negative,
            max_count=params.max_count,
        )
    if isinstance(params, OversampledListParams):
        return _Rules(
            pool_has_test=True, split_test=True,
            rare_from=scale(params.rare_from), middle_from=scale(params.middle_from),
            ge1_from=scale(params.ge1_from),
            rare_count_train=params.rare_count_train, rare_count_test=params.rare_count_test,
            middle_count_test=params.middle_count_test, middle_target=params.middle_target,
            middle_target_if_negative=params.middle_target_if_negative, top_count_test=1,
            top_target=params.top_target, top_target_if_negative=params.top_target_if_negative,
            max_count=params.max_count,
        )
    if isinstance(params, ParentListParams):
        return _Rules(
            pool_has_test=True, split_test=False,
            rare_from=n_classes, middle_from=scale(params.middle_from),
            ge1_from=scale(params.ge1_from),
            rare_count_train=0, rare_count_test=0, middle_count_test=0,
            middle_target=params.middle_target, middle_target_if_negative=None,
            top_count_test=0, top_target=params.top_target,
            top_target_if_negative=params.top_target_if_negative, max_count=params.max_count,
        )
    raise TypeError(f"unknown list parameters {type(params).__name__}")


# --------------------------------------------------------------------------
# compact data


@dataclass(frozen=True)
class ImageLabels:
    """Image -> labels as CSR arrays (labels sorted and unique per image)."""

    indptr: np.ndarray  # int64 [n_images + 1]
    labels: np.ndarray  # int64 [indptr[-1]]
    is_test: np.ndarray  # bool [n_images]: source == 'v5test'
    classes: tuple[str, ...]

    @property
    def n_images(self) -> int:
        return int(self.is_test.size)

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def image_labels_from_pairs(
    image_index: np.ndarray, labels: np.ndarray, is_test: np.ndarray, classes: Sequence[str]
) -> ImageLabels:
    """Build :class:`ImageLabels` from flat (image, label) pairs (duplicates allowed)."""
    n_images = int(np.asarray(is_test).size)
    n_classes = len(classes)
    image_index = np.asarray(image_index, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if image_index.shape != labels.shape:
        raise ValueError("image_index and labels differ in length")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}")
    if image_index.size and (image_index.min() < 0 or image_index.max() >= n_images):
        raise ValueError(f"image indices must lie in 0..{n_images - 1}")
    keys = np.sort(image_index * max(n_classes, 1) + labels)
    if keys.size:  # unique (np.sort + mask: much faster than np.unique here)
        keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
    images = keys // max(n_classes, 1)
    indptr = np.zeros(n_images + 1, dtype=np.int64)
    np.cumsum(np.bincount(images, minlength=n_images), out=indptr[1:])
    return ImageLabels(
        indptr=indptr,
        labels=(keys % max(n_classes, 1)).astype(np.int64),
        is_test=np.asarray(is_test, dtype=bool).copy(),
        classes=tuple(classes),
    )


def image_labels_from_dataset(ann: Any, path: str | Path = "<annotations>") -> ImageLabels:
    """Convert an mmdet 3.x annotation dict (docs/ARCHITECTURE.md) to CSR arrays.

    Bad input raises :class:`InputError` naming ``path``, the image and the problem.
    """
    path = str(path)
    if not isinstance(ann, dict) or "data_list" not in ann or "metainfo" not in ann:
        raise InputError(f"{path}: not an mmdet annotation dict (needs 'metainfo' and 'data_list')")
    classes = ann["metainfo"].get("classes") if isinstance(ann["metainfo"], dict) else None
    if not classes:
        raise InputError(f"{path}: metainfo has no 'classes'")
    classes = tuple(classes)
    data_list = ann["data_list"]
    if not data_list:
        raise InputError(f"{path}: data_list is empty")
    try:
        n_inst = np.fromiter((len(rec["instances"]) for rec in data_list), dtype=np.int64,
                             count=len(data_list))
        flat = [inst["bbox_label"] for rec in data_list for inst in rec["instances"]]
        sources = [rec["source"] for rec in data_list]
    except (KeyError, TypeError) as exc:
        raise InputError(_first_bad_record(path, data_list)) from exc
    bad_sources = set(sources) - SOURCES
    if bad_sources:
        bad = next(i for i, s in enumerate(sources) if s not in SOURCES)
        raise InputError(
            f"{path}: {_record_name(data_list, bad)}: source {sources[bad]!r} is not one of "
            f"{sorted(SOURCES)}"
        )
    labels = np.asarray(flat)
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        bad_pos = next(i for i, v in enumerate(flat) if not isinstance(v, (int, np.integer)))
        bad = int(np.searchsorted(np.cumsum(n_inst), bad_pos, side="right"))
        raise InputError(
            f"{path}: {_record_name(data_list, bad)}: bbox_label {flat[bad_pos]!r} is not an integer"
        )
    labels = labels.astype(np.int64, copy=False)
    out_of_range = (labels < 0) | (labels >= len(classes))
    if out_of_range.any():
        bad_pos = int(np.flatnonzero(out_of_range)[0])
        bad = int(np.searchsorted(np.cumsum(n_inst), bad_pos, side="right"))
        raise InputError(
            f"{path}: {_record_name(data_list, bad)}: bbox_label {labels[bad_pos]} is outside "
            f"0..{len(classes) - 1}"
        )
    is_test = np.fromiter((s == TEST_SOURCE for s in sources), dtype=bool, count=len(sources))
    image_index = np.repeat(np.arange(len(data_list), dtype=np.int64), n_inst)
    return image_labels_from_pairs(image_index, labels, is_test, classes)


def _record_name(data_list: Sequence[Any], index: int) -> str:
    rec = data_list[index]
    img_id = rec.get("img_id") if isinstance(rec, dict) else None
    return f"record {index} ({img_id})" if img_id else f"record {index}"


def _first_bad_record(path: str, data_list: Sequence[Any]) -> str:
    for i, rec in enumerate(data_list):
        if not isinstance(rec, dict):
            return f"{path}: record {i}: not a dict"
        for key in ("instances", "source"):
            if key not in rec:
                return f"{path}: {_record_name(data_list, i)}: missing '{key}'"
        if not isinstance(rec["instances"], list):
            return f"{path}: {_record_name(data_list, i)}: 'instances' is not a list"
        for j, inst in enumerate(rec["instances"]):
            if not isinstance(inst, dict) or "bbox_label" not in inst:
                return f"{path}: {_record_name(data_list, i)}: instance {j} has no 'bbox_label'"
    return f"{path}: malformed data_list"


# --------------------------------------------------------------------------
# the algorithm


@dataclass(frozen=True)
class _ClassIndex:
    """Class -> pool images (CSR, images ascending within a class)."""

    ptr: np.ndarray  # int64 [n_classes + 1]
    images: np.ndarray  # int64
    images_test: np.ndarray  # bool, is_test of ``images``
    pair_labels: np.ndarray  # int64, the class of each entry of ``images``


def _class_index(data: ImageLabels, pool: np.ndarray) -> _ClassIndex:
    counts_per_image = np.diff(data.indptr)
    pair_images = np.repeat(np.arange(data.n_images, dtype=np.int64), counts_per_image)
    keep = pool[pair_images]
    pair_images = pair_images[keep]
    pair_labels = data.labels[keep]
    by_class = np.argsort(pair_labels, kind="stable")
    images = pair_images[by_class]
    labels_sorted = pair_labels[by_class]
    ptr = np.zeros(data.n_classes + 1, dtype=np.int64)
    np.cumsum(np.bincount(labels_sorted, minlength=data.n_classes), out=ptr[1:])
    return _ClassIndex(ptr=ptr, images=images, images_test=data.is_test[images],
                       pair_labels=labels_sorted)


def rank_classes(class_image_counts: np.ndarray) -> np.ndarray:
    """Classes in rank order (rank 0 = most images; ties: lower class index first)."""
    counts = np.asarray(class_image_counts, dtype=np.int64)
    return np.lexsort((np.arange(counts.size), -counts)).astype(np.int64)


def assign_counts(
    n_images: int,
    index: _ClassIndex,
    ranked: np.ndarray,
    rules: _Rules,
    rng: np.random.Generator,
    skip_class: int | None = None,
    n_ranked: int | None = None,
) -> tuple[np.ndarray, int | None]:
    """Per-image repeat counts of one round (module docstring, step 2).

    ``n_ranked``: only ``ranked[:n_ranked]`` get a rule (the classes the
    original's ``value_counts`` lists: those with at least one ranking image);
    default all. Returns the counts (int64 [n_images], 0 = not in the round;
    an image whose count went above ``max_count`` at the cap is 0: the
    original's ordering places only counts 1..10) and the rank at which the
    cap stopped the middle group (None if it did not).
    """
    counts = np.zeros(n_images, dtype=np.int64)
    cap_stop: int | None = None
    n_ranked = ranked.size if n_ranked is None else n_ranked

    def members(rank: int) -> tuple[np.ndarray, np.ndarray | None] | None:
        cls = int(ranked[rank])
        if cls == skip_class or rank >= n_ranked:
            return None
        lo, hi = index.ptr[cls], index.ptr[cls + 1]
        if lo == hi:
            return None
        return index.images[lo:hi], (index.images_test[lo:hi] if rules.split_test else None)

    # rare group
    for rank in range(n_ranked - 1, rules.rare_from - 1, -1):
        got = members(rank)
        if got is None:
            continue
        imgs, test = got
        if test is None:
            counts[imgs] = np.maximum(counts[imgs], rules.rare_count_train)
        else:
            floor = np.where(test, rules.rare_count_test, rules.rare_count_train)
            counts[imgs] = np.maximum(counts[imgs], floor)
    middle = range(min(rules.rare_from, n_ranked) - 1, rules.middle_from - 1, -1)
    if rules.split_test and rules.middle_count_test:
        # oversampled: every test image of every middle class is SET to the
        # test count first (the original's ``sampled.loc[test of grp3] = 5``,
        # before the loop; it also overrides a rare class's 10)
        for rank in middle:
            got = members(rank)
            if got is not None:
                imgs, test = got
                counts[imgs[test]] = rules.middle_count_test
    for rank in middle:
        got = members(rank)
        if got is None:
            continue
        imgs, test = got
        target = rules.middle_target - int(counts[imgs].sum())
        if target < 0:
            if rules.middle_target_if_negative is None:
                continue
            target = rules.middle_target_if_negative
        cand = imgs if test is None else imgs[~test]
        free = cand[counts[cand] == 0]
        if free.size == 0:
            continue
        base, extra = divmod(target, free.size)
        counts[free] = base
        if extra:
            counts[rng.choice(free, size=extra, replace=False)] += 1
        if base + (1 if extra else 0) > rules.max_count:
            # the original writes this class's counts, then stops the group
            cap_stop = rank
            break
    for rank in range(min(rules.middle_from, n_ranked) - 1, rules.ge1_from - 1, -1):
        got = members(rank)
        if got is not None:
            counts[got[0]] = np.maximum(counts[got[0]], 1)
    for rank in range(min(rules.ge1_from, n_ranked) - 1, -1, -1):
        got = members(rank)
        if got is None:
            continue
        imgs, test = got
        if test is not None and rules.top_count_test:
            t = imgs[test]
            counts[t] = np.maximum(counts[t], rules.top_count_test)
        target = rules.top_target - int(counts[imgs].sum())
        if target < 0:
            target = rules.top_target_if_negative
        cand = imgs if test is None else imgs[~test]
        free = cand[counts[cand] == 0]
        k = min(target, free.size)
        if k:
            counts[rng.choice(free, size=k, replace=False)] = 1
    counts[counts > rules.max_count] = 0  # never placed by the original's ordering
    return counts, cap_stop


def order_round(counts: np.ndarray, rng: np.random.Generator, max_count: int = 10) -> np.ndarray:
    """Ordered indices of one round (module docstring, step 3)."""
    counts = np.asarray(counts)
    if counts.size and counts.max() > max_count:
        raise ValueError(f"a count exceeds max_count={max_count}")
    current = rng.permutation(np.flatnonzero(counts == 1)).astype(np.int64)
    for c in range(2, max_count + 1):
        new = np.flatnonzero(counts == c).astype(np.int64)
        if new.size == 0:
            continue
        m, k = current.size, new.size
        size = -(-m // c)  # ceil(m / c)
        out = np.empty(m + c * k, dtype=np.int64)
        pos = 0
        for j in range(c):
            a = min(j * size, m)
            b = min(a + size, m)
            n_old = b - a
            is_new = np.zeros(n_old + k, dtype=bool)
            is_new[:k] = True
            rng.shuffle(is_new)  # a uniformly random set of k slots
            segment = out[pos:pos + n_old + k]
            segment[~is_new] = current[a:b]
            segment[is_new] = rng.permutation(new)
            pos += n_old + k
        current = out
    return current


@dataclass
class RebalancedList:
    """A built list plus what the CLI summary prints."""

    kind: str
    order: np.ndarray  # int64, rounds concatenated
    rounds: list[int]
    round_lengths: np.ndarray  # int64 [n_rounds]
    round_images: np.ndarray  # int64 [n_rounds]: distinct images per round
    class_images: np.ndarray  # int64 [n_classes]: images per class the ranking counts
    ranked: np.ndarray  # int64 [n_classes]: class of each rank
    class_entries: np.ndarray  # int64 [n_rounds, n_classes]: sum of counts of the class's images
    cap_stops: list[int | None]  # rank where the cap stopped the middle group, per round
    boundaries: dict[str, int] = field(default_factory=dict)  # scaled rank boundaries
    stop_at_class_found: bool | None = None  # None: no stop_at_class configured


def kind_of(params: ListParams) -> str:
    for kind, cls in PARAMS_BY_KIND.items():
        if isinstance(params, cls):
            return kind
    raise TypeError(f"unknown list parameters {type(params).__name__}")


def build_list(data: ImageLabels, params: ListParams) -> RebalancedList:
    """Build one re-balanced list (all its rounds, concatenated)."""
    rules = _rules_for(params, data.n_classes)
    pool = np.ones(data.n_images, dtype=bool) if rules.pool_has_test else ~data.is_test
    index = _class_index(data, pool)
    if rules.split_test:
        # oversampled: ranked by TRAIN images only, as the original
        # (``tr_leaves_nodup.cat.value_counts()``); V5-test images do not count
        class_images = np.bincount(index.pair_labels[~index.images_test],
                                   minlength=data.n_classes).astype(np.int64)
    else:
        class_images = np.diff(index.ptr)
    ranked = rank_classes(class_images)
    # classes without a ranking image are not in the original's value_counts:
    # no rule applies to them (they rank last)
    n_ranked = int(np.count_nonzero(class_images))
    skip_class = None
    found = None
    if params.stop_at_class is not None:
        found = params.stop_at_class in data.classes
        if found:
            skip_class = data.classes.index(params.stop_at_class)

    orders, lengths, distinct, entries, cap_stops = [], [], [], [], []
    rounds = rounds_of(params)
    for r in rounds:
        sample_rng = np.random.default_rng(params.sample_seed_base + r)
        shuffle_rng = np.random.default_rng(params.shuffle_seed_base + r)
        counts, cap_stop = assign_counts(data.n_images, index, ranked, rules, sample_rng, skip_class,
                                         n_ranked)
        order = order_round(counts, shuffle_rng, rules.max_count)
        orders.append(order)
        lengths.append(order.size)
        distinct.append(int(np.count_nonzero(counts)))
        entries.append(np.bincount(index.pair_labels, weights=counts[index.images],
                                   minlength=data.n_classes).astype(np.int64))
        cap_stops.append(cap_stop)
    return RebalancedList(
        kind=kind_of(params),
        order=np.concatenate(orders) if orders else np.zeros(0, np.int64),
        rounds=rounds,
        round_lengths=np.asarray(lengths, dtype=np.int64),
        round_images=np.asarray(distinct, dtype=np.int64),
        class_images=class_images,
        ranked=ranked,
        class_entries=np.vstack(entries) if entries else np.zeros((0, data.n_classes), np.int64),
        cap_stops=cap_stops,
        boundaries={"rare_from": rules.rare_from, "middle_from": rules.middle_from,
                    "ge1_from": rules.ge1_from},
        stop_at_class_found=found,
    )


# --------------------------------------------------------------------------
# use by the training sampler


def consumed_entries(iterations: int, images_per_iteration: int) -> int:
    """Entries a finished stage used: iterations x images per iteration (all GPUs)."""
    if iterations < 0 or images_per_iteration < 1:
        raise ValueError(f"bad stage size: {iterations} iterations x {images_per_iteration} images")
    return iterations * images_per_iteration


def skip_consumed(order: np.ndarray, consumed: int) -> np.ndarray:
    """Drop the ``consumed`` entries earlier stages used from the front of ``order``.

    ``consumed`` beyond the list's length is an error (the stage would start
    on an exhausted list), not a silent empty result.
    """
    order = np.asarray(order)
    if consumed < 0:
        raise ValueError(f"consumed must be >= 0, got {consumed}")
    if consumed > order.size:
        raise ValueError(
            f"earlier stages consumed {consumed} entries but the list has only {order.size}"
        )
    return order[consumed:]


def params_from_strings(kind: str, overrides: dict[str, str]) -> ListParams:
    """``kind``'s parameters with ``NAME=VALUE`` string overrides (CLI, config).

    ``rounds`` takes ``first,last``; ``stop_at_class`` takes a MID or ``none``.
    """
    if kind not in PARAMS_BY_KIND:
        raise InputError(f"unknown list kind {kind!r}; expected one of {sorted(PARAMS_BY_KIND)}")
    cls = PARAMS_BY_KIND[kind]
    defaults = cls()
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for name, text in overrides.items():
        if name not in names:
            raise InputError(f"--param {name}: unknown parameter for {kind}; known: {sorted(names)}")
        default = getattr(defaults, name)
        try:
            if name == "rounds":
                parts = [int(p) for p in text.replace("..", ",").split(",")]
                if len(parts) != 2:
                    raise ValueError("expected first,last")
                values[name] = (parts[0], parts[1])
            elif name == "stop_at_class":
                values[name] = None if text.lower() in ("", "none", "null") else text
            elif isinstance(default, int):
                values[name] = int(text)
            else:  # pragma: no cover - every field is handled above
                values[name] = text
        except ValueError as exc:
            raise InputError(f"--param {name}={text}: {exc}") from exc
    params = cls(**values)
    validate_params(params)
    return params


# --------------------------------------------------------------------------
# A list's source: the pickle it indexes (issue 18, item 4)

LIST_SOURCE_FORMAT = "oidseg-list-source/1"


def list_source(kind: str, order: np.ndarray, ann_path: str | Path, n_images: int) -> dict:
    """What a list was built from: its kind, its entries, and the sha256 of
    the annotation pickle whose ``data_list`` it indexes."""
    from oidseg.stage_dir import file_sha256

    return {"format": LIST_SOURCE_FORMAT, "kind": kind, "entries": int(order.size),
            "ann": str(ann_path), "ann_sha256": file_sha256(ann_path), "ann_images": int(n_images)}


def check_list_source(source_path: str | Path, order_path: str | Path, ann_path: str | Path) -> None:
    """:class:`InputError` unless the list ``order_path`` was built from the
    pickle ``ann_path`` (a list indexes one pickle's images: used with
    another pickle whose ``data_list`` is long enough, it trains on the
    wrong images without any other error)."""
    import json

    from oidseg.errors import read_utf8_text
    from oidseg.stage_dir import file_sha256

    try:
        source = json.loads(read_utf8_text(source_path, kind="list source"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{source_path}: list source is not JSON ({exc})") from None
    if not isinstance(source, dict) or source.get("format") != LIST_SOURCE_FORMAT:
        raise InputError(f"{source_path}: not a list source file ({LIST_SOURCE_FORMAT})")
    entries = int(np.load(order_path, mmap_mode="r").shape[0])
    if entries != source.get("entries"):
        raise InputError(f"{order_path}: {entries} entries, its source {source_path} says "
                         f"{source.get('entries')}: the list and its source file are of different builds")
    if file_sha256(ann_path) != source.get("ann_sha256"):
        raise InputError(
            f"{order_path}: this {source.get('kind')} list was built from {source.get('ann')} "
            f"({source.get('ann_images')} images, sha256 {str(source.get('ann_sha256'))[:12]}), "
            f"not from {ann_path}: its indices would pick other images; rebuild the list "
            f"or train on the pickle it was built from")
