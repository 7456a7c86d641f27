"""Annotation stage (SPEC section 3): classes.json, held-out list, training pickles, image lists.

Sub-commands (H = --hierarchy JSON, C = --classes CSV, both required by all):

  classes   H C --out results/annotations/classes.json
  heldout   H C --val-masks VAL_MASKS.csv --size 60 --seed 2019
            [--drop-images 1d5ef05c8da80e31 ...] [--drop-images-from SKIPPED.csv ...]
            --out results/annotations/heldout_val.csv
  train     H C --train-masks CSV --val-masks CSV --v5test-masks CSV
            --heldout results/annotations/heldout_val.csv
            --train-images DIR --val-images DIR --v5test-images DIR
            --train-mask-dir results/annotations/masks/train
            --val-mask-dir results/annotations/masks/validation
            --v5test-mask-dir results/annotations/masks/v5test
            [--drop-images ID ...] [--drop-images-from SKIPPED.csv ...]
            [--png-check header|exists|none] [--sizes-csv CSV ...] [--image-manifests CSV ...]
            --leaf-out results/annotations/leaf_train.pkl
            --parent-out results/annotations/parent_train.pkl
  images    H C --list LIST.csv --image-dir DIR --source test|validation [--image-manifests CSV ...]
            --out SHARD.pkl [SHARD.pkl ...]
            (the list is split into len(--out) contiguous shards of ceil(N/len(--out));
            val_images.pkl: --list heldout_val.csv --out val_images.pkl;
            test shards: --list sample_submission.csv --out test_shards/00.pkl ... 24.pkl)

Image sizes come from the JPEG headers, unless --sizes-csv tables
(ImageID,ImageWidth,ImageHeight) or --image-manifests (the download jobs'
ImageID,Bytes,ImageWidth,ImageHeight,MD5; a shard may be empty) are given.
--drop-images-from: the download jobs' skipped lists (ImageID,Reason), left
out like --drop-images. Every output is written
atomically after all inputs have been validated.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oidseg.annotations import (  # noqa: E402
    DEFAULT_DROP_IMAGES, Source, annotation_dict, check_disjoint, check_mask_files,
    exclude_images, image_list_records, leaf_annotations, parent_annotations,
    select_heldout, split_shards,
)
from oidseg.errors import (  # noqa: E402
    atomic_path, atomic_write_text, run_cli,
)
from oidseg.hierarchy import Hierarchy, load_hierarchy  # noqa: E402
from oidseg.image_download import read_manifests, read_skipped  # noqa: E402
from oidseg.raw import (  # noqa: E402
    JpegSizeReader, SizeLookup, SizeTable, read_image_list, read_masks_csv, read_sizes_csv,
)


def log(msg: str) -> None:
    print(f"[build_annotations {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr)


def _hierarchy(args) -> Hierarchy:
    return load_hierarchy(args.hierarchy, args.classes)


def _size_lookup(image_dir: str, tables: list[SizeTable]) -> SizeLookup:
    if not tables:
        return JpegSizeReader(image_dir)
    if len(tables) == 1:
        return tables[0]
    ids = np.concatenate([t.index.to_numpy() for t in tables])
    return SizeTable(ids, np.concatenate([t.widths for t in tables]),
                     np.concatenate([t.heights for t in tables]),
                     source=" + ".join(t.source for t in tables))


def _size_tables(args) -> list[SizeTable]:
    tables = [read_sizes_csv(p) for p in args.sizes_csv]
    if args.image_manifests:
        tables.append(read_manifests(args.image_manifests))
    return tables


def _drop_list(args) -> list[str]:
    return [*args.drop_images, *read_skipped(args.drop_images_from)]


def _cached_sizes(lookup: SizeLookup, image_ids: np.ndarray) -> SizeTable:
    """Look every image up once (shared by the leaf and parent sets)."""
    ids = [str(i) for i in pd.unique(image_ids)]
    widths, heights = lookup(ids) if ids else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    return SizeTable(ids, widths, heights)


# --------------------------------------------------------------------------- sub-commands


def cmd_classes(args) -> None:
    hierarchy = _hierarchy(args)
    atomic_write_text(args.out, json.dumps(hierarchy.to_json(), indent=1) + "\n")
    log(f"{args.out}: {len(hierarchy.leaf_classes)} leaf, {len(hierarchy.parent_classes)} "
        f"parent, {len(hierarchy.grandparent_classes)} grandparent classes")


def cmd_heldout(args) -> None:
    hierarchy = _hierarchy(args)
    masks = read_masks_csv(args.val_masks, hierarchy.classes)
    chosen = select_heldout(masks["ImageID"].to_numpy(), args.size, args.seed,
                            _drop_list(args), source=str(args.val_masks))
    atomic_write_text(args.out, "ImageID\n" + "".join(f"{i}\n" for i in chosen))
    log(f"{args.out}: {len(chosen)} held-out validation images")


def cmd_train(args) -> None:
    hierarchy = _hierarchy(args)
    heldout = read_image_list(args.heldout, allow_no_rows=True)["ImageID"].tolist()
    tables = _size_tables(args)
    drop = _drop_list(args)
    specs = [
        ("train", args.train_masks, args.train_images, args.train_mask_dir, []),
        ("validation", args.val_masks, args.val_images, args.val_mask_dir, heldout),
        ("v5test", args.v5test_masks, args.v5test_images, args.v5test_mask_dir, []),
    ]
    frames: dict[str, pd.DataFrame] = {}
    files: dict[str, str] = {}
    for name, csv_path, _, mask_dir, held in specs:
        masks = read_masks_csv(csv_path, hierarchy.classes)
        masks = exclude_images(masks, [*drop, *held])
        frames[name], files[name] = masks, str(csv_path)
        log(f"{csv_path}: {len(masks)} mask rows kept on {masks['ImageID'].nunique()} images")
    check_disjoint(frames, files)
    sources = []
    for name, csv_path, image_dir, mask_dir, _ in specs:
        masks = frames[name]
        check_mask_files(mask_dir, masks, str(csv_path), png_check=args.png_check)
        sizes = _cached_sizes(_size_lookup(str(image_dir), tables), masks["ImageID"].to_numpy())
        sources.append((Source(name, str(image_dir), str(mask_dir), sizes), masks))
    # one set in memory at a time; both files are renamed into place at the end
    with contextlib.ExitStack() as stack:
        for out, build in ((args.leaf_out, leaf_annotations),
                           (args.parent_out, parent_annotations)):
            ann = build(hierarchy, sources)
            with open(stack.enter_context(atomic_path(out)), "wb") as fh:
                pickle.dump(ann, fh, protocol=pickle.HIGHEST_PROTOCOL)
            n_inst = sum(len(r["instances"]) for r in ann["data_list"])
            log(f"{out}: {len(ann['data_list'])} images, {n_inst} instances, "
                f"{len(ann['metainfo']['classes'])} classes")
            del ann


def cmd_images(args) -> None:
    hierarchy = _hierarchy(args)
    # a test list without images is an error here, not later at combine
    ids = read_image_list(args.list, allow_no_rows=args.source != "test")["ImageID"].tolist()
    tables = _size_tables(args)
    records = image_list_records(ids, str(args.image_dir),
                                 _size_lookup(str(args.image_dir), tables), args.source)
    shards = split_shards(records, len(args.out))
    payloads = [annotation_dict(hierarchy.classes, hierarchy, shard, split=args.source)
                for shard in shards]
    # all shards are validated and built before the first one is written;
    # the temporary files are renamed together at the end
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(atomic_path(p)) for p in args.out]
        for tmp, payload in zip(tmps, payloads):
            with open(tmp, "wb") as fh:
                pickle.dump(payload, fh, protocol=pickle.HIGHEST_PROTOCOL)
    log(f"{len(ids)} {args.source} images in {len(args.out)} shard(s) of "
        f"<= {max((len(s) for s in shards), default=0)}")


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--hierarchy", required=True, type=Path)
        p.add_argument("--classes", required=True, type=Path)
        return p

    def drop(p: argparse.ArgumentParser) -> None:
        p.add_argument("--drop-images", nargs="*", default=list(DEFAULT_DROP_IMAGES),
                       help="ImageIDs left out of training and held-out sets")
        p.add_argument("--drop-images-from", nargs="*", default=[], type=Path,
                       help="skipped-image lists of the download jobs (ImageID,Reason)")

    def manifests(p: argparse.ArgumentParser) -> None:
        p.add_argument("--image-manifests", nargs="*", default=[], type=Path,
                       help="image sizes from the download jobs' manifests")

    p = common(sub.add_parser("classes"))
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_classes)

    p = common(sub.add_parser("heldout"))
    p.add_argument("--val-masks", required=True, type=Path)
    p.add_argument("--size", required=True, type=int)
    p.add_argument("--seed", type=int, default=2019)
    drop(p)
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_heldout)

    p = common(sub.add_parser("train"))
    for split in ("train", "val", "v5test"):
        p.add_argument(f"--{split}-masks", required=True, type=Path)
        p.add_argument(f"--{split}-images", required=True, type=Path)
        p.add_argument(f"--{split}-mask-dir", required=True, type=Path)
    p.add_argument("--heldout", required=True, type=Path)
    drop(p)
    p.add_argument("--png-check", choices=("header", "exists", "none"), default="header")
    p.add_argument("--sizes-csv", nargs="*", default=[], type=Path)
    manifests(p)
    p.add_argument("--leaf-out", required=True, type=Path)
    p.add_argument("--parent-out", required=True, type=Path)
    p.set_defaults(func=cmd_train)

    p = common(sub.add_parser("images"))
    p.add_argument("--list", required=True, type=Path)
    p.add_argument("--image-dir", required=True, type=Path)
    p.add_argument("--source", required=True, choices=("test", "validation"))
    p.add_argument("--sizes-csv", nargs="*", default=[], type=Path)
    manifests(p)
    p.add_argument("--out", required=True, nargs="+", type=Path)
    p.set_defaults(func=cmd_images)

    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
