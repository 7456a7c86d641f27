# Ensemble test-time augmentation over the 25 test shards and the held-out
# validation split (SPEC section 6).


def ensemble_checkpoints(wildcards):
    return [final_checkpoint(m) for m in ensemble_models(wildcards.ensemble)]


def infer_args(wildcards, input):
    inf = config["inference"]
    models = ensemble_models(wildcards.ensemble)
    pairs = [
        f"--model {os.path.join(workflow.basedir, config['models'][m]['config'])} {ckpt}"
        for m, ckpt in zip(models, input.ckpts)
    ]
    if is_single_model(wildcards.ensemble):
        scales, flip = [inf["single_model_scale"]], False
    else:
        scales, flip = inf["scales"], inf["flip"]
    return " ".join(
        [
            *pairs,
            "--scales " + " ".join(f"{w}x{h}" for w, h in scales),
            "--flip" if flip else "--no-flip",
            f"--score-thr {inf['score_thr']} --nms-iou {inf['nms_iou']}",
            f"--max-per-img {max_per_img(wildcards.split, wildcards.shard)}",
            f"--mask-thr {inf['mask_thr']}",
            f"--rpn-nms {inf['rpn_nms']} --rpn-max {inf['rpn_max']}",
        ]
    )


rule infer:
    input:
        ckpts=ensemble_checkpoints,
        images=lambda w: image_list_pickle(w.split, w.shard),
        ready=images_ready(),
    output:
        "results/inference/{ensemble}/{split}/{shard}.pkl",
    params:
        script=script("infer.py"),
        gpu_wrapper=script("with_gpus.py"),
        args=infer_args,
    log:
        "logs/infer/{ensemble}_{split}_{shard}.log",
    benchmark:
        "benchmarks/infer/{ensemble}_{split}_{shard}.tsv"
    threads: config["inference"]["threads"]
    resources:
        gpu=1,
        mem_mb=lambda w, attempt: 16000 * attempt,
        runtime=config["inference"]["runtime"],
    shell:
        "{PY} {params.gpu_wrapper} --gpus {resources.gpu} --"
        " {PY} {params.script} {params.args} --threads {threads}"
        " --images {input.images} --out {output} 2> {log}"


rule infer_leaf:
    input:
        expand("results/inference/leaf/test/{shard}.pkl", shard=SHARDS),


rule infer_parent:
    input:
        expand("results/inference/parent/test/{shard}.pkl", shard=SHARDS),
