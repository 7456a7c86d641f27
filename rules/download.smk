# The real data: the official challenge files from their public addresses.
# The images are fetched by rules/images.smk (`snakemake images`).
# The Kaggle test list (sample_submission.csv) needs a Kaggle account: put it in
# raw.dir by hand (`kaggle competitions download -c open-images-2019-instance-segmentation`).


if config["dataset"] == "openimages":

    rule download_file:
        output:
            "{path}",
        log:
            "logs/download/{path}.log",
        wildcard_constraints:
            path="|".join(re.escape(p) for p in download_targets()),
        retries: 3
        conda:
            "../envs/annotations.yaml"
        resources:
            downloads=1,
        params:
            script=script("download.py"),
            url=download_url,
        shell:
            "exec python {params.script:q} --url {params.url:q} --out {output:q} 2> {log:q}"


rule download:
    input:
        download_targets(),
