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
        "python {params.script} --detections {input} --out {output} 2> {log}"


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
        "python {params.script} --input {input.csv} --classes-json {input.classes}"
        " {params.parents_only} --score-thr {params.score_thr} --out {output} 2> {log}"


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
        "python {params.script} --inputs {input.leaf} {input.parent} --iou {params.iou}"
        " --score-thr {params.score_thr} --out {output} 2> {log}"


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
        "python {params.script} --image-list {input.image_list} --leaf {input.leaf}"
        " --merged {input.merged} --out {output} 2> {log}"


rule validate_submission:
    input:
        submission="results/{prefix}submission.csv",
        image_list=lambda w: image_list_csv(split_of(w.prefix)),
        classes=f"{ANN}/classes.json",
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
        "python {params.script} --submission {input.submission}"
        " --image-list {input.image_list} --classes-json {input.classes}"
        " --out {output} 2> {log}"


rule submission:
    input:
        "results/submission.csv",
        "results/submission.ok",
