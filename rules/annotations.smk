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


rule build_annotations:
    input:
        hierarchy=raw("hierarchy"),
        classes=raw("classes"),
        train_masks=raw("train_masks"),
        val_masks=raw("val_masks"),
        v5test_masks=raw("v5test_masks"),
        test_list=raw("test_list"),
        masks=mask_flags(),
        ready=images_ready(),
    output:
        classes=f"{ANN}/classes.json",
        heldout=f"{ANN}/heldout_val.csv",
        leaf=f"{ANN}/leaf_train.pkl",
        parent=f"{ANN}/parent_train.pkl",
        val_images=f"{ANN}/val_images.pkl",
        shards=expand(f"{ANN}/test_shards/{{shard}}.pkl", shard=SHARDS),
    log:
        "logs/build_annotations.log",
    benchmark:
        "benchmarks/build_annotations.tsv"
    conda:
        "../envs/annotations.yaml"
    params:
        script=script("build_annotations.py"),
        images=lambda w: config["raw"]["images"],
        mask_root=lambda w, input: os.path.dirname(input.masks[0]),
        out_dir=lambda w, output: os.path.dirname(output.classes),
        cfg=config["annotations"],
        drop=" ".join(config["annotations"]["drop_images"]) or "none",
    shell:
        "python {params.script} --hierarchy {input.hierarchy} --classes {input.classes}"
        " --train-masks {input.train_masks} --val-masks {input.val_masks}"
        " --v5test-masks {input.v5test_masks} --test-list {input.test_list}"
        " --images {params.images} --mask-root {params.mask_root}"
        " --heldout-size {params.cfg[heldout_val][n_images]}"
        " --heldout-seed {params.cfg[heldout_val][seed]}"
        " --n-shards {params.cfg[n_shards]} --drop-images {params.drop}"
        " --out-dir {params.out_dir} 2> {log}"


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
        rules.build_annotations.output,
        expand(f"{ANN}/lists/{{kind}}.npy", kind=["leaf", "leaf_oversampled", "parent"]),
