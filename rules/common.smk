import sys
import re
import os

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

sys.path.insert(0, workflow.basedir)
from oidseg.config_check import semantic_problems, unknown_keys


def config_problems(problems):
    if problems:
        raise WorkflowError(
            "configuration problems:\n" + "\n".join(f"  {p}" for p in problems)
        )


# unknown keys first (with the closest known key), then the schema (types,
# ranges, defaults), then what relates settings to each other and to files
with open(os.path.join(workflow.basedir, "schemas", "config.schema.yaml")) as _f:
    config_problems(unknown_keys(config, yaml.safe_load(_f)))
validate(config, schema="../schemas/config.schema.yaml")
config_problems(semantic_problems(config, workflow.basedir))

ANN = "results/annotations"
RAW = config["raw"]["dir"]
N_SHARDS = config["annotations"]["n_shards"]
SHARDS = [f"{i:02d}" for i in range(N_SHARDS)]
LEAF_MODELS = [m for m, spec in config["models"].items() if spec["classes"] == "leaf"]
ENSEMBLES = config["inference"]["ensembles"]
SPLIT_SHARDS = {"test": SHARDS, "val": ["00"]}

# Official file names (SPEC section 2), relative to raw.dir.
RAW_FILES = {
    "hierarchy": "challenge-2019-label300-segmentable-hierarchy.json",
    "classes": "challenge-2019-classes-description-segmentable.csv",
    "train_masks": "challenge-2019-train-segmentation-masks.csv",
    "val_masks": "challenge-2019-validation-segmentation-masks.csv",
    "train_bbox": "challenge-2019-train-segmentation-bbox.csv",
    "val_bbox": "challenge-2019-validation-segmentation-bbox.csv",
    "train_labels": "challenge-2019-train-segmentation-labels.csv",
    "val_labels": "challenge-2019-validation-segmentation-labels.csv",
    "v5test_masks": "test-annotations-object-segmentation.csv",
    "test_list": "sample_submission.csv",
}
MASK_ZIP_PREFIX = {
    "train": "challenge-2019-train-masks",
    "validation": "challenge-2019-validation-masks",
    "v5test": "test-masks",
}
HEX = "0123456789abcdef"


wildcard_constraints:
    model="|".join(config["models"]),
    stage="[123]",
    shard=r"\d\d",
    split="test|val|predict",
    ensemble="|".join([*ENSEMBLES, *config["models"]]),
    mask_split="train|validation|v5test",
    list_kind="leaf|leaf_oversampled|parent",


def raw(key):
    return os.path.join(RAW, RAW_FILES[key])


def mask_zips(split):
    prefix = MASK_ZIP_PREFIX[split]
    return [os.path.join(config["raw"]["masks"], f"{prefix}-{h}.zip") for h in HEX]


def from_checkout(path):
    """A file of the checkout (``path`` relative to the Snakefile's folder, or
    absolute) as the rules record it: relative to the working directory. So
    params and inputs never hold the checkout's location, and a finished run
    that is moved with its checkout, or a working directory moved beside it,
    stays complete (nothing reruns)."""
    if os.path.isabs(path):
        return path
    return os.path.relpath(os.path.join(workflow.basedir, path))


def script(name):
    """A rule's script (never workflow.source_path in params)."""
    return from_checkout(os.path.join("scripts", name))


def model_config(model):
    return from_checkout(config["models"][model]["config"])


def mmdet_config_files(path):
    """An mmdet config file and the ``_base_`` files it inherits, recursively
    (read with ast: the files are not run): a job that builds a model reads
    them all, so they are its inputs."""
    import ast

    files, todo = [], [path]
    while todo:
        current = todo.pop()
        if current in files:
            continue
        files.append(current)
        with open(current) as f:
            tree = ast.parse(f.read(), filename=current)
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                getattr(t, "id", None) == "_base_" for t in node.targets
            ):
                value = ast.literal_eval(node.value)
                for base in [value] if isinstance(value, str) else value:
                    todo.append(
                        os.path.normpath(os.path.join(os.path.dirname(current), base))
                    )
    return files


def model_config_files(wildcards):
    models = (
        ensemble_models(wildcards.ensemble)
        if hasattr(wildcards, "ensemble")
        else [wildcards.model]
    )
    return sorted({f for m in models for f in mmdet_config_files(model_config(m))})


# ---------------------------------------------------------------- training --
def stage_spec(model, stage):
    return config["models"][model]["stages"][int(stage) - 1]


def images_per_iter(model):
    return config["training"]["images_per_gpu"] * max(
        1, config["models"][model]["gpus"]
    )


def consumed_entries(model, stage):
    """Entries of the stage's list already consumed by earlier stages of the
    same model on the same list (iterations x images per iteration): a later
    stage skips them so that it sees new data (SPEC section 4)."""
    spec = stage_spec(model, stage)
    earlier = config["models"][model]["stages"][: int(stage) - 1]
    return sum(
        s["iters"] for s in earlier if s["list"] == spec["list"]
    ) * images_per_iter(model)


def train_annotation(model):
    return f"{ANN}/{config['models'][model]['classes']}_train.pkl"


def released_file(model):
    """models.<M>.released: one of the original's 2019 checkpoints, or None."""
    return config["models"][model].get("released")


def released_input(wildcards):
    path = released_file(wildcards.model)
    if not path:
        raise ValueError(f"models.{wildcards.model}.released is not set")
    return path


def final_checkpoint(model):
    """Our own checkpoint from the config (models.<M>.checkpoint), else the
    converted released 2019 file (models.<M>.released, rules/released.smk),
    else the last trained stage."""
    ckpt = config["models"][model].get("checkpoint")
    if ckpt:
        return ckpt
    if released_file(model):
        return f"results/models/{model}/released.pth"
    return f"results/models/{model}/stage{len(config['models'][model]['stages'])}.pth"


def trained_here(model):
    """False for a model whose weights come from the config (checkpoint or
    released): it has no training stages, logs or loss curves."""
    spec = config["models"][model]
    return not (spec.get("checkpoint") or spec.get("released"))


# --------------------------------------------------------------- inference --
def ensemble_models(ensemble):
    return ENSEMBLES.get(ensemble, [ensemble])


def is_single_model(ensemble):
    return ensemble not in ENSEMBLES


def image_list_pickle(split, shard):
    if split == "val":
        return f"{ANN}/val_images.pkl"
    if split == "predict":  # the user's images (rules/predict.smk)
        return f"results/predict/lists/{shard}.pkl"
    return f"{ANN}/test_shards/{shard}.pkl"


def max_per_img(split, shard):
    overrides = config["inference"]["max_per_img_overrides"] or {}
    if split == "test" and shard in overrides:
        return overrides[shard]
    return config["inference"]["max_per_img"]


def image_list_csv(split):
    return raw("test_list") if split == "test" else f"{ANN}/heldout_val.csv"


DEMO_MANIFEST = os.path.join(RAW, "demo_manifest.json")


def images_ready():
    """The demo's images are made by `make_demo` (its manifest is written
    last); real images by the download_images jobs, whose manifests the
    annotation stage reads (image_manifests), so later stages reach them
    through the annotation files."""
    return [DEMO_MANIFEST] if config["dataset"] == "demo" else []


def image_dir(split):
    return os.path.join(config["raw"]["images"], split)


IMAGE_SPLITS = ("train", "validation", "v5test", "test")


def image_manifests(*splits, kind="csv"):
    """With dataset: openimages, the outputs of the download_images jobs of
    ``splits`` (rules/images.smk), one per first hex digit of the ImageID:
    ``kind`` "csv" the manifests (ImageID,Bytes,ImageWidth,ImageHeight,MD5),
    "skipped.csv" the images left out (download.allow_missing). Marked
    ancient: a download job that reran (a changed endpoint, say) and found its
    images in place does not rerun the annotation stage. None for the demo."""
    if config["dataset"] != "openimages":
        return []
    folder = os.path.join(config["raw"]["images"], "manifests")
    return ancient(
        [os.path.join(folder, s, f"{h}.{kind}") for s in splits for h in HEX]
    )


IMAGE_ID_LISTS = {
    "train": "train_masks",
    "validation": "val_masks",
    "v5test": "v5test_masks",
    "test": "test_list",
}


def image_key_template(wildcards):
    """The object key of the split's images, with {image_id} left to fill."""
    download = config["download"]
    prefix = download["prefixes"][wildcards.image_split]
    return download["key_template"].replace("{prefix}", prefix)


def image_drop(wildcards):
    """annotations.drop_images of this shard (a param of this job only): they
    are not fetched. Not for the test split, whose images are all submitted."""
    if wildcards.image_split == "test":
        return []
    drop = config["annotations"]["drop_images"]
    return sorted(i for i in drop if i[:1].lower() == wildcards.hex)


def image_fetch_args(wildcards):
    """Source and fetch settings as tokens (recorded: a changed one reruns
    only the download jobs, which find their images in place; the annotation
    stage reads their outputs as ancient inputs)."""
    d = config["download"]
    args = [
        *("--endpoint-url", d["endpoint_url"]),
        *("--region", d["region"]),
        *("--bucket", d["bucket"]),
        *("--key-template", image_key_template(wildcards)),
        *("--addressing-style", d["addressing_style"]),
        *("--threads", d["threads"]),
        *("--retries", d["retries"]),
        *("--backoff", d["retry_backoff_ms"] / 1000),
        *("--timeout", d["timeout_s"]),
        *("--progress-interval", d["progress_interval_s"]),
        *("--allow-missing", d["allow_missing"]),
    ]
    if not d["anonymous"]:
        args.append("--signed")
    if not d["verify_etag"]:
        args.append("--no-verify-etag")
    return [str(a) for a in args]


def mask_flags():
    return expand(f"{ANN}/masks/{{split}}.done", split=list(MASK_ZIP_PREFIX))


# ------------------------------------------------- rule input functions --
def previous_stage(wildcards):
    if wildcards.stage == "1":
        return []
    return f"results/models/{wildcards.model}/stage{int(wildcards.stage) - 1}.pth"


def stage_list(wildcards):
    return f"{ANN}/lists/{stage_spec(wildcards.model, wildcards.stage)['list']}.npy"


def pretrained_weights(wildcards):
    """Stage 1's pretrained backbone: a local file, a model-zoo name
    (open-mmlab://..., torchvision://...), or None."""
    if wildcards.stage != "1":
        return None
    return config["models"][wildcards.model].get("pretrained")


def pretrained_input(wildcards):
    """A local pretrained file is an input of stage 1 (a zoo name is not a file)."""
    value = pretrained_weights(wildcards)
    return [value] if value and "://" not in value else []


def train_args(wildcards):
    """The stage's arguments as a list of tokens (quoted one by one in the
    shell command). A function of the wildcards only, so that Snakemake
    records it and a changed setting reruns the job (SPEC section 5)."""
    spec = stage_spec(wildcards.model, wildcards.stage)
    model = config["models"][wildcards.model]
    train = config["training"]
    pretrained = pretrained_weights(wildcards)
    args = [
        *("--config", model_config(wildcards.model)),
        *("--iters", spec["iters"]),
        *("--lr-factor", spec["lr_factor"]),
        *("--aug", spec["aug"]),
        *("--skip", consumed_entries(wildcards.model, wildcards.stage)),
        *("--images-per-gpu", train["images_per_gpu"]),
        # processes: gpus: 0 (a CPU-only run or cluster) trains in one process
        *("--gpus", max(1, model["gpus"])),
        *("--checkpoint-interval", train["checkpoint_interval"]),
        *("--seed", train["seed"]),
        *("--load-from", previous_stage(wildcards) or "none"),
        *("--pretrained", pretrained or "none"),
    ]
    if train["amp"]:
        args.append("--amp")
    return [str(a) for a in args]


def trained_models(models):
    return [final_checkpoint(m) for m in models]


def ensemble_checkpoints(wildcards):
    return [final_checkpoint(m) for m in ensemble_models(wildcards.ensemble)]


def infer_args(wildcards):
    """The inference job's arguments as a list of tokens; a function of the
    wildcards only, so that Snakemake records it (SPEC section 6)."""
    inf = config["inference"]
    args = []
    for m in ensemble_models(wildcards.ensemble):
        args += ["--model", model_config(m), final_checkpoint(m)]
    if is_single_model(wildcards.ensemble):
        scales, flip = [inf["single_model_scale"]], False
    else:
        scales, flip = inf["scales"], inf["flip"]
    args += ["--scales", *(f"{w}x{h}" for w, h in scales)]
    args += [
        "--flip" if flip else "--no-flip",
        *("--score-thr", inf["score_thr"]),
        *("--nms-iou", inf["nms_iou"]),
        *("--max-per-img", max_per_img(wildcards.split, wildcards.shard)),
        *("--mask-thr", inf["mask_thr"]),
        *("--rpn-nms", inf["rpn_nms"]),
        *("--rpn-max", inf["rpn_max"]),
    ]
    if inf["amp"]:  # only when on: results made before the setting existed stay
        args.append("--amp")
    return [str(a) for a in args]


def infer_prefetch(wildcards, threads):
    """inference.prefetch: a function of ``threads`` too, so Snakemake does
    not record it (the output is the same for any value: changing it reruns
    nothing)."""
    return config["inference"]["prefetch"]


def download_targets():
    files = [raw(k) for k in RAW_FILES if k != "test_list"]
    zips = [z for split in MASK_ZIP_PREFIX for z in mask_zips(split)]
    return files + zips


def download_url(wildcards):
    name = os.path.basename(wildcards.path)
    urls = config["download"]["urls"]
    if name in urls:
        return urls[name]
    for split, prefix in MASK_ZIP_PREFIX.items():
        if name.startswith(f"{prefix}-"):
            return f"{config['download']['mask_urls'][split]}{name}"
    raise ValueError(f"no download address configured for {name}")


def list_source(wildcards):
    kind = "parent" if wildcards.list_kind == "parent" else "leaf"
    return f"{ANN}/{kind}_train.pkl"


def split_of(prefix):
    return "val" if prefix == "val_" else "test"
