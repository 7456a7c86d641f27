# Kaggle encoding, hierarchy expansion, mask-NMS merge, combine, check
# (SPEC section 7). Per shard where that fits.


rule convert:
    input:
        "results/inference/{ensemble}/{split}/{shard}.pkl",
    output:
        "results/post/{split}/{ensemble}/{shard}.csv",
    log:
        "logs/convert/{ensemble}_{split}_{shard}.log",
    conda:
        "../envs/annotations.yaml"
    params:
        script=script("convert.py"),
    shell:
        "exec python {params.script:q} --detections {input:q} --out {output:q} 2> {log:q}"


rule expand_hierarchy:
    input:
        csv="results/post/{split}/{ensemble}/{shard}.csv",
        classes=f"{ANN}/classes.json",
    output:
        "results/post/{split}/{ensemble}_expanded/{shard}.csv",
    log:
        "logs/expand/{ensemble}_{split}_{shard}.log",
    conda:
        "../envs/annotations.yaml"
    params:
        script=script("expand.py"),
        # the leaf ensemble keeps only the copies: it becomes a 25-class set
        parents_only=lambda w: "--parents-only" if w.ensemble == "leaf" else "",
        score_thr=config["postprocess"]["expand_score_thr"],
    shell:
        "exec python {params.script:q} --input {input.csv:q}"
        " --classes-json {input.classes:q} {params.parents_only}"
        " --score-thr {params.score_thr:q} --out {output:q} 2> {log:q}"


rule merge:
    input:
        leaf="results/post/{split}/leaf_expanded/{shard}.csv",
        parent="results/post/{split}/parent_expanded/{shard}.csv",
    output:
        "results/post/{split}/merged/{shard}.csv",
    log:
        "logs/merge/{split}_{shard}.log",
    conda:
        "../envs/annotations.yaml"
    params:
        script=script("merge.py"),
        iou=config["postprocess"]["merge_iou"],
        score_thr=config["postprocess"]["merge_score_thr"],
    shell:
        "exec python {params.script:q} --inputs {input.leaf:q} {input.parent:q}"
        " --iou {params.iou:q} --score-thr {params.score_thr:q} --out {output:q}"
        " 2> {log:q}"


rule combine:
    input:
        image_list=lambda w: image_list_csv(split_of(w.prefix)),
        leaf=lambda w: expand(
            "results/post/{split}/leaf/{shard}.csv",
            split=split_of(w.prefix),
            shard=SPLIT_SHARDS[split_of(w.prefix)],
        ),
        merged=lambda w: expand(
            "results/post/{split}/merged/{shard}.csv",
            split=split_of(w.prefix),
            shard=SPLIT_SHARDS[split_of(w.prefix)],
        ),
    output:
        "results/{prefix}submission.csv",
    log:
        "logs/combine/{prefix}submission.log",
    wildcard_constraints:
        prefix="|val_",
    conda:
        "../envs/annotations.yaml"
    params:
        script=script("combine.py"),
    shell:
        "exec python {params.script:q} --image-list {input.image_list:q}"
        " --leaf {input.leaf:q} --merged {input.merged:q} --out {output:q} 2> {log:q}"


rule validate_submission:
    input:
        submission="results/{prefix}submission.csv",
        image_list=lambda w: image_list_csv(split_of(w.prefix)),
        classes=f"{ANN}/classes.json",
        # the images' true sizes: a declared size must match
        sizes=lambda w: [
            image_list_pickle(split_of(w.prefix), shard)
            for shard in SPLIT_SHARDS[split_of(w.prefix)]
        ],
    output:
        "results/{prefix}submission.ok",
    log:
        "logs/validate_submission/{prefix}submission.log",
    wildcard_constraints:
        prefix="|val_",
    conda:
        "../envs/annotations.yaml"
    params:
        script=script("validate_submission.py"),
    shell:
        "exec python {params.script:q} --submission {input.submission:q}"
        " --image-list {input.image_list:q} --classes-json {input.classes:q}"
        " --image-sizes {input.sizes:q} --out {output:q} 2> {log:q}"


rule submission:
    input:
        "results/submission.csv",
        "results/submission.ok",
