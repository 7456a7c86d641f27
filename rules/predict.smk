# Any images in, instance masks out (issue 21): the leaf and parent
# ensembles, exactly as configured for the test set, on every JPEG/PNG under
# predict.images, then the submission's expansion, merge and combine.
#
#   snakemake --cores N predict --config predict='{images: DIR}'
#
# The folder is listed when the jobs are planned (oidseg.predict.scan_folder):
# every image is an input of the jobs that read it, and each image belongs to
# one of predict.shards shards by a hash of its path, so an added, removed or
# changed image reruns its shard's listing and inference and what follows
# (combine, COCO, drawing), not the other shards; --dry-run says so. The
# inference, convert, expand and merge jobs are the test set's own rules
# (split "predict": results/inference/{ensemble}/predict/, results/post/predict/).


include: "predict_common.smk"


rule predict_list:
    input:
        images=predict_shard_inputs,
    output:
        f"{PREDICT}/lists/{{shard}}.pkl",
    log:
        "logs/predict/list_{shard}.log",
    benchmark:
        "benchmarks/predict/list_{shard}.tsv"
    conda:
        "../envs/annotations.yaml"
    params:
        script=script("predict_list.py"),
        folder=lambda w: predict_folder(),
        shards=config["predict"]["shards"],
        expect=predict_shard_digest,
        skip=(
            "--skip-unreadable"
            if config["predict"]["skip_unreadable"]
            else "--no-skip-unreadable"
        ),
    shell:
        "exec python {params.script:q} --folder {params.folder:q}"
        " --shard {wildcards.shard:q} --shards {params.shards:q} --expect {params.expect:q}"
        " {params.skip:q} --out {output:q} 2> {log:q}"


rule predict_collect:
    input:
        lists=predict_lists(),
    output:
        images=f"{PREDICT}/images.csv",
        skipped=f"{PREDICT}/skipped.csv",
    log:
        "logs/predict/collect.log",
    conda:
        "../envs/annotations.yaml"
    params:
        script=script("predict_collect.py"),
        folder=lambda w: predict_folder(),
        expect=predict_folder_digest,
    shell:
        "exec python {params.script:q} --folder {params.folder:q} --expect {params.expect:q}"
        " --lists {input.lists:q} --out-images {output.images:q}"
        " --out-skipped {output.skipped:q} 2> {log:q}"


rule predict_combine:
    input:
        image_list=f"{PREDICT}/images.csv",
        leaf=predict_post("leaf"),
        merged=predict_post("merged"),
    output:
        f"{PREDICT}/predictions.csv",
    log:
        "logs/predict/combine.log",
    conda:
        "../envs/annotations.yaml"
    params:
        script=script("combine.py"),
    shell:
        "exec python {params.script:q} --image-list {input.image_list:q}"
        " --leaf {input.leaf:q} --merged {input.merged:q} --out {output:q} 2> {log:q}"


rule predict_validate:
    input:
        submission=f"{PREDICT}/predictions.csv",
        image_list=f"{PREDICT}/images.csv",
        classes=f"{ANN}/classes.json",
        sizes=predict_lists(),
    output:
        f"{PREDICT}/predictions.ok",
    log:
        "logs/predict/validate.log",
    conda:
        "../envs/annotations.yaml"
    params:
        script=script("validate_submission.py"),
    shell:
        "exec python {params.script:q} --submission {input.submission:q}"
        " --image-list {input.image_list:q} --classes-json {input.classes:q}"
        " --image-sizes {input.sizes:q} --out {output:q} 2> {log:q}"


rule predict_coco:
    input:
        predictions=f"{PREDICT}/predictions.csv",
        images=f"{PREDICT}/images.csv",
        classes=f"{ANN}/classes.json",
    output:
        f"{PREDICT}/coco.json",
    log:
        "logs/predict/coco.log",
    conda:
        "../envs/annotations.yaml"
    params:
        script=script("predict_coco.py"),
    shell:
        "exec python {params.script:q} --predictions {input.predictions:q}"
        " --images {input.images:q} --classes-json {input.classes:q} --out {output:q} 2> {log:q}"


rule predict_draw:
    input:
        predictions=f"{PREDICT}/predictions.csv",
        images=f"{PREDICT}/images.csv",
        classes=f"{ANN}/classes.json",
        files=predict_all_inputs,
    output:
        images=directory(f"{PREDICT}/images"),
        page=report(
            f"{PREDICT}/page.png",
            caption="../report/predict.rst",
            category="Predict",
        ),
    log:
        "logs/predict/draw.log",
    benchmark:
        "benchmarks/predict/draw.tsv"
    conda:
        "../envs/annotations.yaml"
    threads: 2
    params:
        script=script("predict_draw.py"),
        folder=lambda w: predict_folder(),
        draw_thr=config["predict"]["draw_thr"],
        max_side=config["predict"]["draw_max_side"],
        page_images=config["predict"]["report_images"],
    shell:
        "exec python {params.script:q} --predictions {input.predictions:q}"
        " --images {input.images:q} --folder {params.folder:q}"
        " --classes-json {input.classes:q} --draw-thr {params.draw_thr:q}"
        " --max-side {params.max_side:q} --page-images {params.page_images:q}"
        " --threads {threads} --out-dir {output.images:q} --out-page {output.page:q}"
        " 2> {log:q}"


rule predict:
    input:
        f"{PREDICT}/predictions.csv",
        f"{PREDICT}/predictions.ok",
        f"{PREDICT}/coco.json",
        f"{PREDICT}/images",
        f"{PREDICT}/page.png",
        f"{PREDICT}/skipped.csv",
