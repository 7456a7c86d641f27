# Ensemble test-time augmentation over the 25 test shards and the held-out
# validation split (SPEC section 6).


rule infer:
    input:
        ckpts=ensemble_checkpoints,
        configs=model_config_files,
        images=lambda w: image_list_pickle(w.split, w.shard),
        ready=images_ready(),
        # predict: the user's images of the shard (rules/predict.smk)
        files=lambda w: predict_shard_inputs(w) if w.split == "predict" else [],
    output:
        "results/inference/{ensemble}/{split}/{shard}.pkl",
    log:
        "logs/infer/{ensemble}_{split}_{shard}.log",
    benchmark:
        "benchmarks/infer/{ensemble}_{split}_{shard}.tsv"
    conda:
        "../envs/mmdet.yaml"
    threads: config["inference"]["threads"]
    resources:
        gpu=config["inference"]["gpus"],
        mem_mb=lambda w, attempt: 16000 * attempt,
        runtime=config["inference"]["runtime"],
    params:
        script=script("infer.py"),
        gpu_wrapper=script("with_gpus.py"),
        args=infer_args,
        prefetch=infer_prefetch,
    shell:
        "exec python {params.gpu_wrapper:q} --gpus {resources.gpu} --"
        " python {params.script:q} {params.args:q} --threads {threads}"
        " --prefetch {params.prefetch:q}"
        " --images {input.images:q} --out {output:q} 2> {log:q}"


rule infer_leaf:
    input:
        expand("results/inference/leaf/test/{shard}.pkl", shard=SHARDS),


rule infer_parent:
    input:
        expand("results/inference/parent/test/{shard}.pkl", shard=SHARDS),
