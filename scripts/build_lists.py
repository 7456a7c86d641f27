"""Build one re-balanced ordered training list (SPEC section 4).

    build_lists.py --ann results/annotations/leaf_train.pkl --kind leaf \\
        --classes-json results/annotations/classes.json \\
        --out results/annotations/lists/leaf.npy [--param NAME=VALUE ...]

``--kind`` is ``leaf`` | ``leaf_oversampled`` (leaf pickle) or ``parent``
(parent pickle). ``--param`` overrides a field of the kind's parameter
dataclass in :mod:`oidseg.rebalance` (``LeafListParams``,
``OversampledListParams``, ``ParentListParams``), e.g. ``--param rounds=2,8
--param middle_target=30 --param stop_at_class=none``. The pickle's classes
must equal ``leaf_classes`` (leaf kinds) or ``parent_classes`` (parent) of
``classes.json``. Output: ``.npy`` int64 indices into the pickle's
``data_list``, rounds concatenated, written atomically; with ``--out-source``
a JSON of what it indexes (kind, entries, the pickle's path and sha256),
which ``train.py --list-source`` checks. A summary (entries per round,
per-class sampled counts) goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oidseg.errors import InputError, atomic_path, atomic_write_text, load_pickle, run_cli  # noqa: E402
from oidseg.rebalance import (  # noqa: E402
    PARAMS_BY_KIND,
    RebalancedList,
    build_list,
    image_labels_from_dataset,
    list_source,
    params_from_strings,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ann", required=True, help="annotation pickle (mmdet 3.x dict)")
    parser.add_argument("--kind", required=True, choices=sorted(PARAMS_BY_KIND))
    parser.add_argument("--classes-json", required=True, help="classes.json (Hierarchy.to_json)")
    parser.add_argument("--out", required=True, help="output .npy")
    parser.add_argument("--out-source", default=None,
                        help="JSON naming the pickle the list indexes (its sha256): train.py --list-source")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="override a list parameter (repeatable)")
    return parser.parse_args(argv)


def expected_classes(classes_json: Path, kind: str) -> list[str]:
    try:
        meta = json.loads(classes_json.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{classes_json}: cannot read classes JSON ({exc})") from exc
    key = "parent_classes" if kind == "parent" else "leaf_classes"
    if not isinstance(meta, dict) or not isinstance(meta.get(key), list):
        raise InputError(f"{classes_json}: no '{key}' list")
    return meta[key]


def summary(result: RebalancedList, classes: tuple[str, ...]) -> str:
    lines = [f"{result.kind}: {result.order.size} entries over {len(result.rounds)} rounds; "
             f"rank boundaries {result.boundaries}"]
    for i, r in enumerate(result.rounds):
        stop = result.cap_stops[i]
        lines.append(
            f"  round {r}: {result.round_lengths[i]} entries, {result.round_images[i]} images"
            + (f", cap stopped the middle group at rank {stop}" if stop is not None else "")
        )
    lines.append("  rank class mid images entries/round(mean) min max")
    for rank, cls in enumerate(result.ranked):
        per_round = result.class_entries[:, cls]
        lines.append(
            f"  {rank:4d} {cls:4d} {classes[cls]} {result.class_images[cls]} "
            f"{per_round.mean():.1f} {per_round.min()} {per_round.max()}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    overrides: dict[str, str] = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InputError(f"--param {item!r}: expected NAME=VALUE")
        overrides[name.strip()] = value.strip()
    params = params_from_strings(args.kind, overrides)

    ann_path = Path(args.ann)
    ann = load_pickle(ann_path, kind="annotation pickle")
    data = image_labels_from_dataset(ann, ann_path)
    del ann
    wanted = expected_classes(Path(args.classes_json), args.kind)
    if list(data.classes) != list(wanted):
        raise InputError(
            f"{ann_path}: metainfo classes ({len(data.classes)}) differ from "
            f"{args.classes_json} {'parent' if args.kind == 'parent' else 'leaf'}_classes "
            f"({len(wanted)})"
        )
    result = build_list(data, params)
    if result.stop_at_class_found is False:
        print(f"warning: stop_at_class {params.stop_at_class} is not a class of {ann_path}; "
              "no class is held back", file=sys.stderr)
    if result.order.size == 0:
        raise InputError(f"{ann_path}: the {args.kind} list is empty (no labelled pool images)")
    with atomic_path(args.out) as tmp, open(tmp, "wb") as fh:
        np.save(fh, result.order.astype(np.int64, copy=False))
    if args.out_source:
        source = list_source(args.kind, result.order, ann_path, data.n_images)
        atomic_write_text(args.out_source, json.dumps(source, indent=1) + "\n")
    print(summary(result, data.classes), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(run_cli(main))
