# Raw Open Images files -> class lists, annotation pickles, held-out split,
# test shards and re-balanced ordered lists (SPEC sections 1, 3, 4).


rule extract_masks:
    input:
        lambda w: mask_zips(w.mask_split),
    output:
        touch(f"{ANN}/masks/{{mask_split}}.done"),
    log:
        "logs/extract_masks/{mask_split}.log",
    conda:
        "../envs/annotations.yaml"
    params:
        script=script("extract_masks.py"),
        out_dir=lambda w, output: output[0][: -len(".done")],
    shell:
        "python {params.script} --zips {input} --out-dir {params.out_dir}"
        " --flag {output} 2> {log}"


rule annotation_classes:
    input:
        hierarchy=raw("hierarchy"),
        classes=raw("classes"),
    output:
        f"{ANN}/classes.json",
    log:
        "logs/annotation_classes.log",
    conda:
        "../envs/annotations.yaml"
    params:
        script=script("build_annotations.py"),
    shell:
        "python {params.script} classes --hierarchy {input.hierarchy}"
        " --classes {input.classes} --out {output} 2> {log}"


rule heldout_split:
    input:
        hierarchy=raw("hierarchy"),
        classes=raw("classes"),
        val_masks=raw("val_masks"),
    output:
        f"{ANN}/heldout_val.csv",
    log:
        "logs/heldout_split.log",
    conda:
        "../envs/annotations.yaml"
    params:
        script=script("build_annotations.py"),
        size=config["annotations"]["heldout_val"]["n_images"],
        seed=config["annotations"]["heldout_val"]["seed"],
        drop=config["annotations"]["drop_images"],
    shell:
        "python {params.script} heldout --hierarchy {input.hierarchy}"
        " --classes {input.classes} --val-masks {input.val_masks}"
        " --size {params.size} --seed {params.seed} --drop-images {params.drop}"
        " --out {output} 2> {log}"


rule train_sets:
    input:
        hierarchy=raw("hierarchy"),
        classes=raw("classes"),
        train_masks=raw("train_masks"),
        val_masks=raw("val_masks"),
        v5test_masks=raw("v5test_masks"),
        heldout=f"{ANN}/heldout_val.csv",
        mask_flags=mask_flags(),
        ready=images_ready(),
    output:
        leaf=f"{ANN}/leaf_train.pkl",
        parent=f"{ANN}/parent_train.pkl",
    log:
        "logs/train_sets.log",
    benchmark:
        "benchmarks/train_sets.tsv"
    conda:
        "../envs/annotations.yaml"
    params:
        script=script("build_annotations.py"),
        images=lambda w: {s: image_dir(s) for s in MASK_ZIP_PREFIX},
        masks=lambda w, input: {
            s: flag[: -len(".done")]
            for s, flag in zip(MASK_ZIP_PREFIX, input.mask_flags)
        },
        drop=config["annotations"]["drop_images"],
        png_check=config["annotations"]["png_check"],
    shell:
        "python {params.script} train --hierarchy {input.hierarchy} --classes {input.classes}"
        " --train-masks {input.train_masks} --train-images {params.images[train]}"
        " --train-mask-dir {params.masks[train]}"
        " --val-masks {input.val_masks} --val-images {params.images[validation]}"
        " --val-mask-dir {params.masks[validation]}"
        " --v5test-masks {input.v5test_masks} --v5test-images {params.images[v5test]}"
        " --v5test-mask-dir {params.masks[v5test]}"
        " --heldout {input.heldout} --drop-images {params.drop}"
        " --png-check {params.png_check}"
        " --leaf-out {output.leaf} --parent-out {output.parent} 2> {log}"


rule val_images:
    input:
        hierarchy=raw("hierarchy"),
        classes=raw("classes"),
        heldout=f"{ANN}/heldout_val.csv",
        ready=images_ready(),
    output:
        f"{ANN}/val_images.pkl",
    log:
        "logs/val_images.log",
    conda:
        "../envs/annotations.yaml"
    params:
        script=script("build_annotations.py"),
        images=lambda w: image_dir("validation"),
    shell:
        "python {params.script} images --hierarchy {input.hierarchy}"
        " --classes {input.classes} --list {input.heldout} --image-dir {params.images}"
        " --source validation --out {output} 2> {log}"


rule test_shards:
    input:
        hierarchy=raw("hierarchy"),
        classes=raw("classes"),
        test_list=raw("test_list"),
        ready=images_ready(),
    output:
        expand(f"{ANN}/test_shards/{{shard}}.pkl", shard=SHARDS),
    log:
        "logs/test_shards.log",
    conda:
        "../envs/annotations.yaml"
    params:
        script=script("build_annotations.py"),
        images=lambda w: image_dir("test"),
    shell:
        "python {params.script} images --hierarchy {input.hierarchy}"
        " --classes {input.classes} --list {input.test_list} --image-dir {params.images}"
        " --source test --out {output} 2> {log}"


rule build_list:
    input:
        ann=list_source,
        classes=f"{ANN}/classes.json",
    output:
        f"{ANN}/lists/{{list_kind}}.npy",
    log:
        "logs/build_list/{list_kind}.log",
    benchmark:
        "benchmarks/build_list/{list_kind}.tsv"
    conda:
        "../envs/annotations.yaml"
    params:
        script=script("build_lists.py"),
        settings=lambda w: " ".join(
            f"--param {k}={','.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in config["rebalance"].get(w.list_kind, {}).items()
        ),
    shell:
        "python {params.script} --ann {input.ann} --kind {wildcards.list_kind}"
        " --classes-json {input.classes} {params.settings} --out {output} 2> {log}"


rule annotations:
    input:
        rules.annotation_classes.output,
        rules.train_sets.output,
        rules.val_images.output,
        rules.test_shards.output,
        expand(f"{ANN}/lists/{{kind}}.npy", kind=["leaf", "leaf_oversampled", "parent"]),
