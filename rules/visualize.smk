# Masks drawn on images for the report: the held-out validation images with
# their ground truth beside the final submission's masks, and a few test
# images (predictions only). The masks are decoded from the Kaggle CSVs, so
# the figures show exactly what is submitted.


rule visualize:
    input:
        val_submission="results/val_submission.csv",
        test_submission="results/submission.csv",
        image_ids=f"{ANN}/heldout_val.csv",
        hierarchy=raw("hierarchy"),
        classes=raw("classes"),
        masks_csv=raw("val_masks"),
        bbox_csv=raw("val_bbox"),
        labels_csv=raw("val_labels"),
        masks=f"{ANN}/masks/validation.done",
        ready=images_ready(),
    output:
        val=report(
            "results/figures/predictions_val.png",
            caption="../report/predictions_val.rst",
            category="Predictions",
        ),
        test=report(
            "results/figures/predictions_test.png",
            caption="../report/predictions_test.rst",
            category="Predictions",
        ),
    log:
        "logs/visualize.log",
    conda:
        "../envs/annotations.yaml"
    params:
        script=script("visualize.py"),
        mask_dir=lambda w, input: input.masks[: -len(".done")],
        val_images=image_dir("validation"),
        test_images=image_dir("test"),
        n_images=config["report"]["n_images"],
        n_test_images=config["report"]["n_test_images"],
        score_thr=config["report"]["score_thr"],
    shell:
        "exec python {params.script:q} --val-submission {input.val_submission:q}"
        " --test-submission {input.test_submission:q} --image-ids {input.image_ids:q}"
        " --hierarchy {input.hierarchy:q} --classes {input.classes:q}"
        " --masks-csv {input.masks_csv:q} --bbox-csv {input.bbox_csv:q}"
        " --labels-csv {input.labels_csv:q} --masks {params.mask_dir:q}"
        " --val-images {params.val_images:q} --test-images {params.test_images:q}"
        " --n-images {params.n_images:q} --n-test-images {params.n_test_images:q}"
        " --score-thr {params.score_thr:q}"
        " --out-val {output.val:q} --out-test {output.test:q} 2> {log:q}"


rule figures:
    input:
        rules.visualize.output,
        "results/eval/pr_curves.png",
