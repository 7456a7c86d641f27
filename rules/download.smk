# The real data: the official challenge files from their public addresses.
# Images are not fetched here (about 1.7M JPEGs; see README "Real data").
# The Kaggle test list (sample_submission.csv) needs a Kaggle account: put it in
# raw.dir by hand (`kaggle competitions download -c open-images-2019-instance-segmentation`).


def download_targets():
    files = [raw(k) for k in RAW_FILES if k != "test_list"]
    zips = [z for split in MASK_ZIP_PREFIX for z in mask_zips(split)]
    return files + zips


def download_url(wildcards, output):
    name = os.path.basename(output[0])
    urls = config["download"]["urls"]
    if name in urls:
        return urls[name]
    for split, prefix in MASK_ZIP_PREFIX.items():
        if name.startswith(prefix + "-"):
            return config["download"]["mask_urls"][split] + name
    raise ValueError(f"no download address configured for {name}")


if config["dataset"] == "openimages":

    rule download_file:
        output:
            "{path}",
        wildcard_constraints:
            path="|".join(re.escape(p) for p in download_targets()),
        params:
            script=script("download.py"),
            url=download_url,
        log:
            "logs/download/{path}.log",
        resources:
            downloads=1,
        retries: 3
        shell:
            "{PY} {params.script} --url {params.url} --out {output} 2> {log}"


rule download:
    input:
        download_targets(),
