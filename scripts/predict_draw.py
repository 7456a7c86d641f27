"""Draw the final predictions of ``predict`` on the user's images.

    python scripts/predict_draw.py --predictions results/predict/predictions.csv \
        --images results/predict/images.csv --folder DIR \
        --classes-json results/annotations/classes.json --draw-thr 0.3 --max-side 1333 \
        --page-images 8 --out-dir results/predict/images --out-page results/predict/page.png

One PNG per image, ``OUT_DIR/<its path under DIR>.png`` (e.g. ``holiday/IMG_1.jpg.png``):
the image upright (EXIF orientation applied, as predicted), scaled down to
--max-side when larger (up to 640 pixels when smaller, for readable
labels), the masks scoring at least --draw-thr blended in their class
colours, each labelled with its class names (a mask and its
hierarchy copies share one label) and score (``oidseg.visualize``). The page
(--out-page) is a grid of the first --page-images images with such a mask,
for the report. The folder is written whole or not at all.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oidseg.cli import fraction, positive_int  # noqa: E402
from oidseg.errors import InputError, run_cli  # noqa: E402

PAGE_COLUMNS = 4
PAGE_SIDE = 480  # pixels of an image on the page (its long side)
MIN_SIDE = 640  # a smaller image is drawn enlarged to this long side (readable labels)


def bounded_map(fn, items, threads: int):
    """``map(fn, items)`` in order on ``threads`` threads, at most
    2 x ``threads`` results waiting (a folder of 10,000 photos is not held
    in memory)."""
    from collections import deque

    with ThreadPoolExecutor(threads) as pool:
        waiting: deque = deque()
        for item in items:
            waiting.append(pool.submit(fn, item))
            if len(waiting) >= 2 * threads:
                yield waiting.popleft().result()
        while waiting:
            yield waiting.popleft().result()


def fit(image, max_side: int, min_side: int = 0):
    """``image`` scaled down to a long side of ``max_side`` (area average),
    or up to ``min_side`` (bilinear); else as it is."""
    import cv2

    height, width = image.shape[:2]
    long_side = max(height, width)
    target = max_side if long_side > max_side else min(min_side, max_side) if long_side < min_side else long_side
    if target == long_side:
        return image
    scale = target / long_side
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", required=True, type=Path, help="Kaggle CSV of the images")
    parser.add_argument("--images", required=True, type=Path, help="images.csv of predict_collect")
    parser.add_argument("--folder", required=True, help="the user's image folder (predict.images)")
    parser.add_argument("--classes-json", required=True, type=Path)
    parser.add_argument("--draw-thr", type=fraction, default=0.3, help="lowest score drawn")
    parser.add_argument("--max-side", type=positive_int, default=1333, help="longest side of a drawn image")
    parser.add_argument("--page-images", type=positive_int, default=8, help="images on the report page")
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--out-page", required=True, type=Path)
    args = parser.parse_args(argv)

    import json

    import cv2
    import numpy as np

    from oidseg import visualize as vis
    from oidseg.images import read_upright
    from oidseg.kaggle import iter_shard
    from oidseg.postprocess import load_classes_json
    from oidseg.predict import read_images_csv

    started, started_at = time.perf_counter(), time.time()
    cv2.setNumThreads(1)
    classes = load_classes_json(args.classes_json).classes
    names = dict(json.loads(args.classes_json.read_text(encoding="utf-8")).get("names", {}))
    colours = vis.class_colours(classes)
    files = {row["ImageID"]: row["File"] for row in read_images_csv(args.images)}
    known = set(classes)

    def draw(row):
        if row.image_id not in files:
            raise InputError(f"{args.predictions}: row {row.row} / {row.image_id}: not in {args.images}")
        item = vis.parse_row(args.predictions, row, known)
        path = os.path.join(args.folder, files[row.image_id])
        image = read_upright(path, row.image_id)
        if image.shape[:2] != (row.height, row.width):
            raise InputError(f"{path} / {row.image_id}: image is {image.shape[1]}x{image.shape[0]}, "
                             f"the predictions say {row.width}x{row.height}")
        image = fit(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), args.max_side, MIN_SIDE)
        height, width = image.shape[:2]
        instances = vis.decode_predictions(item, height, width, args.draw_thr,
                                           where=f"{args.predictions}: row {row.row} / {row.image_id}")
        drawn = vis.render_image(image, instances, colours, names)
        ok, png = cv2.imencode(".png", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_PNG_COMPRESSION, 6])
        if not ok:
            raise RuntimeError(f"{path}: PNG encoding failed")
        return files[row.image_id], png.tobytes(), image, instances

    args.out_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in args.out_dir.parent.glob(f".{args.out_dir.name}.*.tmp"):  # of a killed job
        if stale.is_dir() and stale.stat().st_mtime < started_at:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{args.out_dir.name}.", suffix=".tmp", dir=args.out_dir.parent))
    page, spare, n_images, n_masks = [], [], 0, 0
    try:
        for rel, png, image, instances in bounded_map(draw, iter_shard(args.predictions), args.threads):
            out = tmp / f"{rel}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(png)
            n_images += 1
            n_masks += len(instances)
            chosen = page if instances else spare
            if len(chosen) < args.page_images:
                small = fit(image, PAGE_SIDE)
                for inst in instances:
                    inst.mask = cv2.resize(inst.mask.astype(np.uint8), small.shape[1::-1],
                                           interpolation=cv2.INTER_NEAREST).astype(bool)
                chosen.append(vis.Panel(small, instances, f"{rel}: {len(instances)} masks"))
        if not n_images:
            raise InputError(f"{args.predictions}: no image rows")
        panels = (page + spare)[: args.page_images]
        vis.plot_grid(panels, PAGE_COLUMNS, args.out_page, colours=colours, names=names,
                      title=f"predict: masks scoring at least {args.draw_thr:g}")
        try:
            if args.out_dir.exists():
                shutil.rmtree(args.out_dir)
            os.replace(tmp, args.out_dir)
        except BaseException:
            args.out_page.unlink(missing_ok=True)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"predict_draw: {n_images} images, {n_masks} masks >= {args.draw_thr:g} -> {args.out_dir}/, "
          f"page of {len(panels)} -> {args.out_page}, {time.perf_counter() - started:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(run_cli(main))
