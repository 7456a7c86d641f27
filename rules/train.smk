# Four Cascade Mask R-CNNs, each trained in chained learning-rate stages
# (SPEC section 5). The stage table is config["models"][model]["stages"].


def previous_stage(wildcards):
    if wildcards.stage == "1":
        return []
    return f"results/models/{wildcards.model}/stage{int(wildcards.stage) - 1}.pth"


def stage_list(wildcards):
    return f"{ANN}/lists/{stage_spec(wildcards.model, wildcards.stage)['list']}.npy"


def train_args(wildcards, input):
    spec = stage_spec(wildcards.model, wildcards.stage)
    model = config["models"][wildcards.model]
    train = config["training"]
    pretrained = model.get("pretrained") if wildcards.stage == "1" else None
    args = [
        f"--config {os.path.join(workflow.basedir, model['config'])}",
        f"--iters {spec['iters']}",
        f"--lr-factor {spec['lr_factor']}",
        f"--aug {spec['aug']}",
        f"--skip {consumed_entries(wildcards.model, wildcards.stage)}",
        f"--images-per-gpu {train['images_per_gpu']}",
        f"--base-lr {train['base_lr']} --base-batch {train['base_batch']}",
        f"--gpus {model['gpus']}",
        f"--checkpoint-interval {train['checkpoint_interval']}",
        f"--seed {train['seed']}",
        f"--load-from {input.prev}" if input.prev else "--load-from none",
        f"--pretrained {pretrained}" if pretrained else "--pretrained none",
    ]
    if train["amp"]:
        args.append("--amp")
    return " ".join(args)


rule train:
    input:
        ann=lambda w: train_annotation(w.model),
        order=stage_list,
        prev=previous_stage,
        masks=mask_flags(),
    output:
        ckpt="results/models/{model}/stage{stage}.pth",
        log="results/models/{model}/stage{stage}.log.jsonl",
    params:
        script=script("train.py"),
        gpu_wrapper=script("with_gpus.py"),
        args=train_args,
        # resumable checkpoints live here, NOT as a declared output: a failed
        # or killed job keeps them and the rerun resumes from the latest one
        work_dir="work/{model}/stage{stage}",
    log:
        "logs/train/{model}_stage{stage}.log",
    benchmark:
        "benchmarks/train/{model}_stage{stage}.tsv"
    threads: config["training"]["threads"]
    resources:
        gpu=lambda w: config["models"][w.model]["gpus"],
        mem_mb=lambda w, attempt: config["models"][w.model]["mem_mb"] * attempt,
        runtime=lambda w: config["models"][w.model]["runtime"],
    shell:
        "{PY} {params.gpu_wrapper} --gpus {resources.gpu} --"
        " {PY} {params.script} {params.args} --threads {threads}"
        " --ann {input.ann} --order {input.order} --work-dir {params.work_dir}"
        " --out {output.ckpt} --log-jsonl {output.log} 2> {log}"


def trained_models(models):
    return [final_checkpoint(m) for m in models]


rule train_all:
    input:
        trained_models(config["models"]),


for _model in config["models"]:

    rule:
        name:
            f"train_{_model}"
        input:
            final_checkpoint(_model),
