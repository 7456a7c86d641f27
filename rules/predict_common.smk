# Helpers of rules/predict.smk: the user's folder, listed once when the jobs
# are planned, and its images' shards (oidseg/predict.py).

PREDICT = "results/predict"


def predict_shards():
    return [f"{i:02d}" for i in range(config["predict"]["shards"])]


def predict_folder():
    folder = config["predict"]["images"]
    if not folder:
        raise WorkflowError(
            "predict: no image folder; set predict.images, e.g. "
            "snakemake --cores 4 predict --config predict='{images: DIR}'"
        )
    return folder


_PREDICT_SCAN = {}


def predict_scan():
    """The folder's listing (once per Snakemake run); a missing folder or one
    without any JPEG/PNG is an error before any job runs."""
    from oidseg.errors import InputError
    from oidseg.predict import scan_folder

    folder = predict_folder()
    if folder not in _PREDICT_SCAN:
        try:
            scan = scan_folder(folder)
        except InputError as exc:
            raise WorkflowError(f"predict: {exc}")
        if not scan.images:
            raise WorkflowError(
                f"predict: {folder}: no JPEG or PNG image"
                + (
                    f" ({len(scan.skipped)} other file{'s' if len(scan.skipped) != 1 else ''})"
                    if scan.skipped
                    else " (empty)"
                )
            )
        _PREDICT_SCAN[folder] = scan
    return _PREDICT_SCAN[folder]


def predict_shard_files(shard):
    from oidseg.predict import shard_files

    n = config["predict"]["shards"]
    return shard_files(predict_scan().images, int(shard), n)


def predict_shard_inputs(wildcards):
    return [
        os.path.join(predict_folder(), f) for f in predict_shard_files(wildcards.shard)
    ]


def predict_all_inputs(wildcards):
    return [os.path.join(predict_folder(), f) for f in predict_scan().images]


def predict_shard_digest(wildcards):
    """Recorded by Snakemake (a function of the wildcards): the shard's file
    list changes -> the listing reruns; the job checks it is still the same."""
    from oidseg.predict import list_digest

    return list_digest(predict_shard_files(wildcards.shard))


def predict_folder_digest(wildcards):
    """The whole folder's listing, skipped files included."""
    return predict_scan().digest()


def predict_lists():
    return expand(f"{PREDICT}/lists/{{shard}}.pkl", shard=predict_shards())


def predict_post(kind):
    return expand(f"results/post/predict/{kind}/{{shard}}.csv", shard=predict_shards())
