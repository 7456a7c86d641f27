import json

# Scoring with the official Open Images metric on the held-out validation
# split: our run's version of SPEC section 9's table.

# entry -> (Kaggle CSV scored, description)
EVAL_ENTRIES = {
    **{
        m: (f"results/post/val/{m}/00.csv", f"{m} alone (275 classes, no TTA)")
        for m in LEAF_MODELS
    },
    "leaf_tta": ("results/post/val/leaf/00.csv", "leaf TTA ensemble (275 classes)"),
    **{
        m: (f"results/post/val/{m}_expanded/00.csv", f"{m} alone (25 classes, no TTA)")
        for m in config["models"]
        if m not in LEAF_MODELS
    },
    "parent_tta": (
        "results/post/val/parent_expanded/00.csv",
        "parent TTA (25 classes)",
    ),
    "leaf_expanded": (
        "results/post/val/leaf_expanded/00.csv",
        "leaf ensemble expanded (25 classes)",
    ),
    "merged": ("results/post/val/merged/00.csv", "mask-NMS of both (25 classes)"),
    "final": ("results/val_submission.csv", "total (final)"),
}


wildcard_constraints:
    entry="|".join(EVAL_ENTRIES),


rule score:
    input:
        submission=lambda w: EVAL_ENTRIES[w.entry][0],
        image_ids=f"{ANN}/heldout_val.csv",
        hierarchy=raw("hierarchy"),
        classes=raw("classes"),
        masks_csv=raw("val_masks"),
        bbox_csv=raw("val_bbox"),
        labels_csv=raw("val_labels"),
        masks=f"{ANN}/masks/validation.done",
        ready=images_ready(),
    output:
        json="results/eval/{entry}.json",
        csv="results/eval/{entry}.per_class.csv",
        pr="results/eval/{entry}.pr.npz",
    log:
        "logs/score/{entry}.log",
    benchmark:
        "benchmarks/score/{entry}.tsv"
    conda:
        "../envs/annotations.yaml"
    params:
        script=script("evaluate.py"),
        mask_dir=lambda w, input: input.masks[: -len(".done")],
        images=lambda w: os.path.join(config["raw"]["images"], "validation"),
    shell:
        "exec python {params.script:q} --submission {input.submission:q}"
        " --name {wildcards.entry:q}"
        " --hierarchy {input.hierarchy:q} --classes {input.classes:q}"
        " --masks-csv {input.masks_csv:q} --bbox-csv {input.bbox_csv:q}"
        " --labels-csv {input.labels_csv:q} --masks {params.mask_dir:q}"
        " --images {params.images:q} --image-ids {input.image_ids:q}"
        " --out-json {output.json:q} --out-csv {output.csv:q}"
        " --out-pr {output.pr:q} 2> {log:q}"


rule summarize_scores:
    input:
        expand("results/eval/{entry}.json", entry=EVAL_ENTRIES),
    output:
        report(
            "results/eval/summary.csv",
            caption="../report/metrics.rst",
            category="Evaluation",
        ),
    log:
        "logs/summarize_scores.log",
    conda:
        "../envs/annotations.yaml"
    params:
        script=script("summarize_scores.py"),
        descriptions=json.dumps({k: v[1] for k, v in EVAL_ENTRIES.items()}),
    shell:
        "exec python {params.script:q} --descriptions {params.descriptions:q}"
        " --out {output:q} {input:q} 2> {log:q}"


rule plot_report:
    input:
        summary="results/eval/summary.csv",
        per_class="results/eval/final.per_class.csv",
        pr="results/eval/final.pr.npz",
        logs=[
            f"results/models/{m}/stage{s + 1}.log.jsonl"
            for m, spec in config["models"].items()
            if trained_here(m)
            for s in range(len(spec["stages"]))
        ],
    output:
        ap=report(
            "results/eval/per_class_ap.png",
            caption="../report/per_class_ap.rst",
            category="Evaluation",
        ),
        loss=report(
            "results/models/loss_curves.png",
            caption="../report/loss_curves.rst",
            category="Training",
        ),
        pr=report(
            "results/eval/pr_curves.png",
            caption="../report/pr_curves.rst",
            category="Evaluation",
        ),
    log:
        "logs/plot_report.log",
    conda:
        "../envs/annotations.yaml"
    params:
        script=script("plot_report.py"),
        n_pr_classes=config["report"]["n_pr_classes"],
    shell:
        "exec python {params.script:q} --per-class {input.per_class:q}"
        " --logs {input.logs:q} --out-ap {output.ap:q} --out-loss {output.loss:q}"
        " --pr {input.pr:q} --n-pr-classes {params.n_pr_classes:q}"
        " --out-pr {output.pr:q} 2> {log:q}"


rule evaluate:
    input:
        "results/eval/summary.csv",
        "results/eval/per_class_ap.png",
        "results/models/loss_curves.png",
        "results/val_submission.ok",
