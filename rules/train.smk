# Four Cascade Mask R-CNNs, each trained in chained learning-rate stages
# (SPEC section 5). The stage table is config["models"][model]["stages"].


rule train:
    input:
        ann=lambda w: train_annotation(w.model),
        order=stage_list,
        order_source=lambda w: stage_list(w).replace(".npy", ".source.json"),
        prev=previous_stage,
        masks=mask_flags(),
        configs=model_config_files,
        pretrained=pretrained_input,
    output:
        ckpt="results/models/{model}/stage{stage}.pth",
        log="results/models/{model}/stage{stage}.log.jsonl",
    log:
        "logs/train/{model}_stage{stage}.log",
    benchmark:
        "benchmarks/train/{model}_stage{stage}.tsv"
    conda:
        "../envs/mmdet.yaml"
    threads: config["training"]["threads"]
    resources:
        gpu=lambda w: config["models"][w.model]["gpus"],
        mem_mb=lambda w, attempt: config["models"][w.model]["mem_mb"] * attempt,
        runtime=lambda w: config["models"][w.model]["runtime"],
    params:
        script=script("train.py"),
        gpu_wrapper=script("with_gpus.py"),
        args=train_args,
        # resumable checkpoints live here, NOT as a declared output: a failed
        # or killed job keeps them and the rerun resumes from the latest one
        work_dir="work/{model}/stage{stage}",
        nonfinite_patience=config["training"]["nonfinite_patience"],
    # logs/train/... holds this attempt (Snakemake deletes a job's log before it
    # runs); work/{model}/stage{stage}/train.log keeps every attempt's, also
    # when a start is refused because another trainer holds the work dir
    shell:
        "exec python {params.gpu_wrapper:q} --gpus {resources.gpu} --"
        " python {params.script:q} {params.args:q} --threads {threads}"
        " --nonfinite-patience {params.nonfinite_patience}"
        " --ann {input.ann:q} --order {input.order:q} --list-source {input.order_source:q}"
        " --work-dir {params.work_dir:q}"
        " --out {output.ckpt:q} --log-jsonl {output.log:q} 2> {log:q}"


rule train_all:
    input:
        trained_models(config["models"]),


for _model in config["models"]:

    rule:
        name:
            f"train_{_model}"
        input:
            final_checkpoint(_model),
