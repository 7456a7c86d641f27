# The images (dataset: openimages): exactly the JPEGs the run reads, from the
# dataset's public S3 bucket (oidseg/image_download.py). One job per split and
# first hex digit of the ImageID (as the mask zips): train = the images of the
# train masks CSV, validation and v5test = their masks CSVs, test = the Kaggle
# test list. Resumable (images already in place and valid are kept; the job's
# resume state is {manifest folder}/.{hex}.verified.csv) and verified (length,
# MD5 from the ETag, complete JPEG). `--resources downloads=N` bounds the jobs
# that fetch at once; each fetches with download.threads threads.
# The annotation stage reads the manifests (image sizes) and the skipped lists.

if config["dataset"] == "openimages":

    rule download_images:
        input:
            ids=lambda w: raw(IMAGE_ID_LISTS[w.image_split]),
        output:
            manifest=os.path.join(
                config["raw"]["images"], "manifests", "{image_split}", "{hex}.csv"
            ),
            skipped=os.path.join(
                config["raw"]["images"],
                "manifests",
                "{image_split}",
                "{hex}.skipped.csv",
            ),
        log:
            "logs/download_images/{image_split}/{hex}.log",
        benchmark:
            "benchmarks/download_images/{image_split}/{hex}.tsv"
        wildcard_constraints:
            image_split="|".join(IMAGE_SPLITS),
            hex="[0-9a-f]",
        # a job that still fails after its own retries resumes where it stopped
        retries: 2
        conda:
            "../envs/annotations.yaml"
        resources:
            downloads=1,
        params:
            script=script("download_images.py"),
            image_dir=lambda w: image_dir(w.image_split),
            args=image_fetch_args,
            drop=image_drop,
        shell:
            "exec python {params.script:q} --ids {input.ids:q}"
            " --split {wildcards.image_split:q} --shard {wildcards.hex:q}"
            " --image-dir {params.image_dir:q} {params.args:q}"
            " --drop-images {params.drop:q}"
            " --manifest {output.manifest:q} --skipped {output.skipped:q} 2> {log:q}"


rule images:
    input:
        images_ready(),
        image_manifests(*IMAGE_SPLITS),
