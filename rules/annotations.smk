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
        out_dir=lambda w: f"{ANN}/masks/{w.mask_split}",
    shell:
        "exec python {params.script:q} --zips {input:q} --out-dir {params.out_dir:q}"
        " --flag {output:q} 2> {log:q}"


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
        "exec python {params.script:q} classes --hierarchy {input.hierarchy:q}"
        " --classes {input.classes:q} --out {output:q} 2> {log:q}"


rule heldout_split:
    input:
        hierarchy=raw("hierarchy"),
        classes=raw("classes"),
        val_masks=raw("val_masks"),
        skipped=image_manifests("validation", kind="skipped.csv"),
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
        "exec python {params.script:q} heldout --hierarchy {input.hierarchy:q}"
        " --classes {input.classes:q} --val-masks {input.val_masks:q}"
        " --size {params.size:q} --seed {params.seed:q} --drop-images {params.drop:q}"
        " --drop-images-from {input.skipped:q} --out {output:q} 2> {log:q}"


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
        manifests=image_manifests("train", "validation", "v5test"),
        skipped=image_manifests("train", "validation", "v5test", kind="skipped.csv"),
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
        masks={s: f"{ANN}/masks/{s}" for s in MASK_ZIP_PREFIX},
        drop=config["annotations"]["drop_images"],
        png_check=config["annotations"]["png_check"],
    shell:
        "exec python {params.script:q} train --hierarchy {input.hierarchy:q}"
        " --classes {input.classes:q}"
        " --train-masks {input.train_masks:q} --train-images {params.images[train]:q}"
        " --train-mask-dir {params.masks[train]:q}"
        " --val-masks {input.val_masks:q} --val-images {params.images[validation]:q}"
        " --val-mask-dir {params.masks[validation]:q}"
        " --v5test-masks {input.v5test_masks:q}"
        " --v5test-images {params.images[v5test]:q}"
        " --v5test-mask-dir {params.masks[v5test]:q}"
        " --heldout {input.heldout:q} --drop-images {params.drop:q}"
        " --drop-images-from {input.skipped:q} --image-manifests {input.manifests:q}"
        " --png-check {params.png_check:q}"
        " --leaf-out {output.leaf:q} --parent-out {output.parent:q} 2> {log:q}"


rule val_images:
    input:
        hierarchy=raw("hierarchy"),
        classes=raw("classes"),
        heldout=f"{ANN}/heldout_val.csv",
        ready=images_ready(),
        manifests=image_manifests("validation"),
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
        "exec python {params.script:q} images --hierarchy {input.hierarchy:q}"
        " --classes {input.classes:q} --list {input.heldout:q}"
        " --image-dir {params.images:q} --image-manifests {input.manifests:q}"
        " --source validation --out {output:q} 2> {log:q}"


rule test_shards:
    input:
        hierarchy=raw("hierarchy"),
        classes=raw("classes"),
        test_list=raw("test_list"),
        ready=images_ready(),
        manifests=image_manifests("test"),
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
        "exec python {params.script:q} images --hierarchy {input.hierarchy:q}"
        " --classes {input.classes:q} --list {input.test_list:q}"
        " --image-dir {params.images:q} --image-manifests {input.manifests:q}"
        " --source test --out {output:q} 2> {log:q}"


rule build_list:
    input:
        ann=list_source,
        classes=f"{ANN}/classes.json",
    output:
        order=f"{ANN}/lists/{{list_kind}}.npy",
        source=f"{ANN}/lists/{{list_kind}}.source.json",
    log:
        "logs/build_list/{list_kind}.log",
    benchmark:
        "benchmarks/build_list/{list_kind}.tsv"
    conda:
        "../envs/annotations.yaml"
    params:
        script=script("build_lists.py"),
        settings=lambda w: [
            f"--param={k}={','.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in config["rebalance"].get(w.list_kind, {}).items()
        ],
    shell:
        "exec python {params.script:q} --ann {input.ann:q} --kind {wildcards.list_kind:q}"
        " --classes-json {input.classes:q} {params.settings:q} --out {output.order:q}"
        " --out-source {output.source:q} 2> {log:q}"


rule annotations:
    input:
        rules.annotation_classes.output,
        rules.train_sets.output,
        rules.val_images.output,
        rules.test_shards.output,
        expand(f"{ANN}/lists/{{kind}}.npy", kind=["leaf", "leaf_oversampled", "parent"]),
