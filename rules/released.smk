# The original's released weights (issue 10): models.<M>.released: PATH turns
# that model's training into this one conversion job (the model's config
# should be configs/released/<M>.py, the 2019 box conventions).

# (checkpoint and released both set: an error of oidseg/config_check.py)


rule convert_released:
    input:
        released=released_input,
        classes=f"{ANN}/classes.json",
        configs=model_config_files,
    output:
        "results/models/{model}/released.pth",
    log:
        "logs/convert_released/{model}.log",
    benchmark:
        "benchmarks/convert_released/{model}.tsv"
    conda:
        "../envs/mmdet.yaml"
    resources:
        mem_mb=8000,
        runtime="30m",
    params:
        script=script("convert_released.py"),
        config=lambda w: model_config(w.model),
        kind=lambda w: config["models"][w.model]["classes"],
    shell:
        "exec python {params.script:q} --released {input.released:q}"
        " --config {params.config:q} --classes-json {input.classes:q}"
        " --kind {params.kind:q} --out {output:q} 2> {log:q}"
